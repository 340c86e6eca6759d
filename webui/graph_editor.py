"""The ComfyUI graph editor (the `comfyui-frontend-package` wheel) served at /graph/ against our API.

The editor derives its API base from its page's path: opened at /graph/, it asks for /graph/api/...,
/graph/ws and /graph/templates/... . `mount_editor` routes those to the same handlers as /api/..., /ws
and /templates/... (one set of routes, one auth layer), serves the editor's files, and sends a
Content-Security-Policy with the page that keeps the browser from contacting any other host (the
bundle knows of release checks, a node registry, sign-in, telemetry and template media elsewhere).

`router(ctx)` holds the routes the editor needs besides ComfyUI's core API (webui/comfy_api.py):
users, settings, user data files (saved workflows), the jobs list, feature flags, model folders and
our workflows offered as templates. Include it at "" and "/api", as comfy_api's router.

The first time a browser opens the editor, it opens workflows/txt2img.json: a small script we add to
the page asks for it through the editor's own `?template=<name>&source=<module>` link, and the
template routes serve our API-format workflows converted to the editor's format.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..nodes.folders import MODEL_KINDS, REPO_ROOT, write_atomically
from ..nodes.registry import object_info
from .context import ServerContext
from .graph_layout import api_to_ui

log = logging.getLogger(__name__)

EDITOR_PATH = "/graph"
TEMPLATE_MODULE = "inkwash"
DEFAULT_TEMPLATE = "txt2img"
WORKFLOWS_DIR = REPO_ROOT / "workflows"
SETTINGS_FILE = "comfy.settings.json"
BOOT_SCRIPT_NAME = "inkwash-editor.js"
# What the editor asks for under its own path that belongs to the API: routed to the app's root.
EDITOR_API_PREFIXES = ("/api/", "/ws", "/internal/", "/templates/")

# Settings the editor gets unless the user changed them: no release check against api.comfy.org.
# (Comfy.TutorialCompleted is left to the editor: set, a browser without saved tabs would start on
# ComfyUI's own default graph, whose model links point at huggingface.co.)
DEFAULT_SETTINGS: dict[str, Any] = {
    "Comfy.Notification.ShowVersionUpdates": False,
}

# The browser may load and connect only to this server; inline styles are needed by the editor's
# components, inline scripts only with the hashes of the page's own (see _content_security_policy),
# WebAssembly (a bundled decoder) but no eval of JavaScript.
CSP_DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self' 'wasm-unsafe-eval'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data: blob:",
    "media-src": "'self' data: blob:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "worker-src": "'self' blob:",
    "frame-src": "'none'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
}

BOOT_SCRIPT = f"""\
// Opens Inkwash's {DEFAULT_TEMPLATE} workflow the first time this browser opens the graph editor,
// through the editor's own template link (?template=...&source=...).
(function () {{
  var key = 'Inkwash.GraphEditor.DefaultOpened';
  try {{
    if (localStorage.getItem(key)) return;
    localStorage.setItem(key, '1');
    var params = new URLSearchParams(location.search);
    if (params.has('template') || params.has('workflows') || params.has('share')) return;
    params.set('template', '{DEFAULT_TEMPLATE}');
    params.set('source', '{TEMPLATE_MODULE}');
    history.replaceState(history.state, '', location.pathname + '?' + params.toString() + location.hash);
  }} catch (e) {{}}
}})();
"""

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
_MODULE_SCRIPT = re.compile(r"<script type=\"module\"", re.I)


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- the editor's files ------------------------------------------------------------------------------

def frontend_dir() -> Path | None:
    """The static files of the installed comfyui-frontend-package, or None when it is not installed."""
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None or not spec.origin:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "index.html").is_file() else None


def _content_security_policy(inline_scripts: list[str]) -> str:
    directives = dict(CSP_DIRECTIVES)
    hashes = " ".join("'sha256-%s'" % base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
                      for s in inline_scripts)
    if hashes:
        directives["script-src"] += " " + hashes
    return "; ".join(f"{name} {value}" for name, value in directives.items())


@lru_cache(maxsize=4)
def _editor_page(index_file: Path, mtime: float) -> tuple[bytes, str]:
    """index.html with our boot script added before the editor's, and the CSP that fits it."""
    html = index_file.read_text(encoding="utf-8")
    tag = f'<script src="./{BOOT_SCRIPT_NAME}"></script>'
    match = _MODULE_SCRIPT.search(html)
    html = html[:match.start()] + tag + html[match.start():] if match else html.replace("</head>", tag + "</head>")
    return html.encode("utf-8"), _content_security_policy(_INLINE_SCRIPT.findall(html))


class EditorStaticFiles(StaticFiles):
    """The editor's files, each with the CSP (a worker or a file opened directly gets it too)."""

    def __init__(self, *args: Any, csp: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.csp = csp

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


class EditorApiPrefix:
    """Routes /graph/api/..., /graph/ws, /graph/internal/..., /graph/templates/... to /api/..., /ws, ...:
    the editor builds its API URLs from the path it was opened at."""

    def __init__(self, app: ASGIApp, prefix: str = EDITOR_PATH):
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path.startswith(self.prefix):
                rest = path[len(self.prefix):]
                if any(rest == p.rstrip("/") or rest.startswith(p) for p in EDITOR_API_PREFIXES):
                    scope = dict(scope, path=rest)
                    raw = scope.get("raw_path")
                    if isinstance(raw, bytes) and raw.startswith(self.prefix.encode()):
                        scope["raw_path"] = raw[len(self.prefix):]
        await self.app(scope, receive, send)


def mount_editor(app: FastAPI, ctx: ServerContext, path: str = EDITOR_PATH) -> bool:
    """Serve the editor at `path`/ (False, and nothing mounted, when the frontend is not installed).

    Call it before anything is mounted at "/": routes and mounts match in the order they were added.
    The API itself comes from `router(ctx)` and comfy_api's router, included at "" and "/api"."""
    static = frontend_dir()
    if static is None:
        log.warning("comfyui-frontend-package is not installed; the graph editor is not served")
        return False
    index_file = static / "index.html"

    def page() -> tuple[bytes, str]:
        return _editor_page(index_file, index_file.stat().st_mtime)

    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

    @app.get(path, include_in_schema=False)
    def editor_redirect(request: Request):
        # The page's relative asset URLs and the editor's API base need the trailing slash.
        query = request.url.query
        return RedirectResponse(path + "/" + (f"?{query}" if query else ""), status_code=307)

    @app.get(path + "/", include_in_schema=False)
    @app.get(path + "/index.html", include_in_schema=False)
    def editor_page():
        body, csp = page()
        return Response(body, media_type="text/html; charset=utf-8",
                        headers={**headers, "Content-Security-Policy": csp})

    @app.get(f"{path}/{BOOT_SCRIPT_NAME}", include_in_schema=False)
    def boot_script():
        return Response(BOOT_SCRIPT, media_type="text/javascript", headers=headers)

    @app.get(f"{path}/user.css", include_in_schema=False)
    def user_css():
        return Response("", media_type="text/css", headers=headers)  # the page links one; we ship none

    csp = page()[1]
    app.mount(path, EditorStaticFiles(directory=static, csp=csp), name="graph-editor")
    # The editor names its favicon and a few images (progress favicon, logos) from the site's root.
    favicon = static / "assets" / "favicon.ico"

    @app.get("/assets/favicon.ico", include_in_schema=False)
    def editor_favicon():
        return FileResponse(favicon) if favicon.is_file() else Response(status_code=404)

    images = static / "assets" / "images"
    if images.is_dir():
        app.mount("/assets/images", EditorStaticFiles(directory=images, csp=csp), name="graph-editor-images")
    app.add_middleware(EditorApiPrefix, prefix=path)
    return True


# -- user data files -----------------------------------------------------------------------------------

def user_root(ctx: ServerContext) -> Path:
    return Path(ctx.data_dir) / "user" / "default"


def user_path(root: Path, name: str) -> Path:
    """`root/name`, refused when the name is absolute, has a `..` part, or resolves (symlinks
    followed) outside `root`."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise Refused(400, "invalid file name")
    name = name.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise Refused(403, "file name must stay inside the user folder")
    base = root.resolve()
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise Refused(403, "file name must stay inside the user folder")
    return target


def _file_info(path: Path, relative_to: Path) -> dict:
    stat = path.stat()
    return {"path": path.relative_to(relative_to).as_posix(), "size": stat.st_size,
            "modified": int(stat.st_mtime * 1000), "created": int(stat.st_ctime * 1000)}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _userdata_names(request: Request) -> list[str]:
    """The file names after /userdata/ in the request's path: [file], or [file, dest] for a move.

    Read from the raw (still percent-encoded) path: the editor encodes a name's slashes as %2F, so
    `workflows%2Fa.json/move/workflows%2Fb.json` splits unambiguously."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    path = path.split("?", 1)[0]
    marker = "/userdata/"
    rest = path[path.index(marker) + len(marker):] if marker in path else ""
    segments = rest.split("/")
    if request.method == "POST" and "move" in segments[1:-1]:
        at = segments.index("move", 1)
        return [unquote("/".join(segments[:at])), unquote("/".join(segments[at + 1:]))]
    return [unquote(rest)]


def _list_files(root: Path, directory: Path, recurse: bool) -> list[Path]:
    base = root.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recurse else []
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            path = Path(dirpath) / filename
            resolved = path.resolve()
            if resolved.is_file() and base in resolved.parents:  # a symlink leading out is not listed
                found.append(path)
    return found


class SettingsStore:
    """The user's settings (comfy.settings.json), with our defaults under them."""

    def __init__(self, path: Path, defaults: Mapping[str, Any]):
        self.path = path
        self.defaults = dict(defaults)
        self._lock = threading.Lock()

    def _stored(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def all(self) -> dict:
        return {**self.defaults, **self._stored()}

    def get(self, key: str) -> Any:
        stored = self._stored()
        return stored[key] if key in stored else self.defaults.get(key)

    def update(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            stored = self._stored()
            stored.update(values)
            write_atomically(self.path, json.dumps(stored, indent=1).encode())


# -- jobs, in the shape of ComfyUI's /api/jobs ---------------------------------------------------------

JOB_STATUS = {"pending": "pending", "running": "in_progress", "success": "completed", "error": "failed",
              "interrupted": "cancelled", "cancelled": "cancelled"}
PREVIEWABLE = ("images", "video", "audio")


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds else None


def _outputs_summary(outputs: Mapping) -> tuple[int, int, dict | None]:
    count = previewable = 0
    preview = None
    for node_id, node_outputs in (outputs or {}).items():
        if not isinstance(node_outputs, Mapping):
            continue
        for media, items in node_outputs.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                count += 1
                if media in PREVIEWABLE:
                    previewable += 1
                    if preview is None or (item.get("type") == "output" and preview.get("type") != "output"):
                        preview = {**item, "nodeId": str(node_id), "mediaType": media}
    return count, previewable, preview


def _execution_error(job: Any) -> dict | None:
    error = getattr(job, "error", None)
    if not isinstance(error, Mapping):
        return None
    traceback = error.get("traceback")
    return {**error, "node_id": str(error.get("node_id") or ""), "node_type": str(error.get("node_type") or ""),
            "exception_message": str(error.get("exception_message") or ""),
            "exception_type": str(error.get("exception_type") or ""),
            "traceback": [str(line) for line in traceback] if isinstance(traceback, list) else []}


def job_entry(job: Any, detail: bool = False) -> dict:
    """A job as an entry of ComfyUI's GET /api/jobs (detail: as GET /api/jobs/{id})."""
    count, previewable, preview = _outputs_summary(job.outputs)
    extra = {k: v for k, v in (job.extra or {}).items() if k != "source"}
    pnginfo = extra.get("extra_pnginfo")
    workflow_meta = pnginfo.get("workflow") if isinstance(pnginfo, Mapping) else None
    entry = {
        "id": job.id, "status": JOB_STATUS.get(job.status, job.status), "priority": job.number,
        "create_time": _ms(job.created), "execution_start_time": _ms(job.started),
        "execution_end_time": _ms(job.finished), "outputs_count": count,
        "previewable_outputs_count": previewable, "preview_output": preview,
        "execution_error": _execution_error(job),
        "workflow_id": workflow_meta.get("id") if isinstance(workflow_meta, Mapping) else None,
    }
    if detail:
        entry["outputs"] = job.outputs or {}
        entry["workflow"] = {"prompt": job.workflow, "extra_data": extra}
        entry["execution_status"] = {"status_str": "success" if job.status == "success" else "error",
                                     "completed": job.status == "success", "messages": job.messages or []}
    return entry


def _all_jobs(ctx: ServerContext) -> list[Any]:
    running = ctx.queue.running()
    return [*([running] if running is not None else []), *ctx.queue.pending(), *ctx.queue.history(None)]


# -- our workflows as templates ------------------------------------------------------------------------

def _template_names(workflows_dir: Path) -> list[str]:
    names = sorted(p.stem for p in workflows_dir.glob("*.json") if re.fullmatch(r"[A-Za-z0-9_.-]+", p.stem))
    return sorted(names, key=lambda n: n != DEFAULT_TEMPLATE)  # the default first


def editor_workflow(ctx: ServerContext, api_workflow: Mapping) -> dict:
    """An API-format workflow in the editor's format, for this server's node types."""
    return api_to_ui(api_workflow, object_info(dict(ctx.registry)))


def thumbnail(graph: Mapping, size: tuple[int, int] = (512, 384)) -> bytes:
    """A JPEG sketch of an editor workflow: its nodes as boxes, its links as lines."""
    from PIL import Image, ImageDraw

    nodes = {n["id"]: n for n in graph.get("nodes") or []}
    image = Image.new("RGB", size, (23, 23, 24))
    if nodes:
        left = min(n["pos"][0] for n in nodes.values())
        top = min(n["pos"][1] for n in nodes.values())
        right = max(n["pos"][0] + n["size"][0] for n in nodes.values())
        bottom = max(n["pos"][1] + n["size"][1] for n in nodes.values())
        margin = 24
        scale = min((size[0] - 2 * margin) / max(right - left, 1), (size[1] - 2 * margin) / max(bottom - top, 1))
        dx = (size[0] - (right - left) * scale) / 2
        dy = (size[1] - (bottom - top) * scale) / 2

        def box(node: Mapping) -> tuple[float, float, float, float]:
            x, y = (node["pos"][0] - left) * scale + dx, (node["pos"][1] - top) * scale + dy
            return x, y, x + node["size"][0] * scale, y + node["size"][1] * scale

        draw = ImageDraw.Draw(image)
        for _, source, _, target, _, _ in graph.get("links") or []:
            if source in nodes and target in nodes:
                a, b = box(nodes[source]), box(nodes[target])
                draw.line([(a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)], fill=(120, 160, 220), width=3)
        for node in nodes.values():
            x0, y0, x1, y1 = box(node)
            draw.rounded_rectangle([x0, y0, x1, y1], radius=6, fill=(53, 53, 53), outline=(90, 90, 90), width=2)
            draw.rectangle([x0 + 2, y0 + 2, x1 - 2, y0 + min(14, (y1 - y0) / 3)], fill=(75, 75, 78))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


# -- the routes ----------------------------------------------------------------------------------------

def _refusal(error: Refused) -> Response:
    return JSONResponse({"error": error.message}, status_code=error.status)


def router(ctx: ServerContext, workflows_dir: Path = WORKFLOWS_DIR,
           default_settings: Mapping[str, Any] = DEFAULT_SETTINGS) -> APIRouter:
    api = APIRouter()
    root = user_root(ctx)
    settings = SettingsStore(root / SETTINGS_FILE, default_settings)
    for folder in ("workflows", "subgraphs"):  # the editor lists both on start-up
        (root / folder).mkdir(parents=True, exist_ok=True)

    # users: one user, settings kept on the server
    @api.get("/users")
    def get_users():
        return {"storage": "server", "migrated": True}

    @api.post("/users")
    def post_users():
        return JSONResponse({"error": "Inkwash serves a single user"}, status_code=400)

    # settings
    @api.get("/settings")
    def get_settings():
        return settings.all()

    @api.post("/settings")
    async def post_settings(request: Request):
        try:
            values = json.loads(await _read_body(request, ctx.max_upload_bytes) or b"null")
        except Refused as error:
            return _refusal(error)
        except ValueError:
            values = None
        if not isinstance(values, dict):
            return JSONResponse({"error": "expected a JSON object of settings"}, status_code=400)
        settings.update(values)
        return Response(status_code=200)

    @api.get("/settings/{setting_id}")
    def get_setting(setting_id: str):
        return JSONResponse(settings.get(setting_id))

    @api.post("/settings/{setting_id}")
    async def post_setting(setting_id: str, request: Request):
        try:
            value = json.loads(await _read_body(request, ctx.max_upload_bytes))
        except Refused as error:
            return _refusal(error)
        except ValueError:
            return JSONResponse({"error": "expected a JSON value"}, status_code=400)
        settings.update({setting_id: value})
        return Response(status_code=200)

    # user data files
    @api.get("/userdata")
    def list_userdata(request: Request):
        query = request.query_params
        directory = query.get("dir", "")
        if not directory:
            return JSONResponse({"error": "dir is required"}, status_code=400)
        try:
            path = user_path(root, directory)
        except Refused as error:
            return _refusal(error)
        if not path.is_dir():
            return JSONResponse({"error": "directory not found"}, status_code=404)
        recurse = query.get("recurse", "").lower() == "true"
        full_info = query.get("full_info", "").lower() == "true"
        split = query.get("split", "").lower() == "true"
        results: list[Any] = []
        for file in _list_files(root, path, recurse):
            if full_info:
                results.append(_file_info(file, path))
            else:
                relative = file.relative_to(path).as_posix()
                results.append([relative, *relative.split("/")] if split else relative)
        return results

    @api.get("/v2/userdata")
    def list_userdata_v2(request: Request):
        requested = request.query_params.get("path", "")
        base = root.resolve() if root.exists() else root
        try:
            target = user_path(root, requested) if requested else base
        except Refused as error:
            return JSONResponse({"error": error.message}, status_code=400)
        if not target.exists():
            return [] if target == base else JSONResponse({"error": "not found"}, status_code=404)
        if not target.is_dir():
            return JSONResponse({"error": "not a directory"}, status_code=400)
        results = []
        for dirpath, dirnames, filenames in os.walk(target):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in dirnames:
                results.append({"name": name, "path": (here / name).relative_to(base).as_posix(), "type": "directory"})
            for file in _list_files(root, here, recurse=False):
                stat = file.stat()
                results.append({"name": file.name, "path": file.relative_to(base).as_posix(), "type": "file",
                                "size": stat.st_size, "modified": stat.st_mtime})
        results.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return results

    @api.get("/userdata/{name:path}")
    def get_userdata(request: Request, name: str):
        try:
            path = user_path(root, _userdata_names(request)[0])
        except Refused as error:
            return _refusal(error)
        if not path.is_file():
            if path == root.resolve() / "user.css":
                return Response("", media_type="text/css")  # the editor's page always links one
            return JSONResponse({"error": "not found"}, status_code=404)
        is_css = path == root.resolve() / "user.css"
        media = "text/css" if is_css else "application/json" if path.suffix == ".json" else "application/octet-stream"
        # User files are never rendered as pages of this origin.
        return Response(path.read_bytes(), media_type=media, headers={
            "X-Content-Type-Options": "nosniff", "Content-Disposition": "inline" if is_css else "attachment"})

    @api.post("/userdata/{name:path}")
    async def post_userdata(request: Request, name: str):
        query = request.query_params
        overwrite = query.get("overwrite", "true") != "false"
        full_info = query.get("full_info", "false").lower() == "true"
        names = _userdata_names(request)
        try:
            if len(names) == 2:
                source, dest = user_path(root, names[0]), user_path(root, names[1])
                if not source.is_file():
                    return JSONResponse({"error": "not found"}, status_code=404)
                if dest.exists() and not overwrite:
                    return JSONResponse({"error": "file already exists"}, status_code=409)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, dest)
                path = dest
            else:
                path = user_path(root, names[0])
                if path.exists() and not overwrite:
                    return JSONResponse({"error": "file already exists"}, status_code=409)
                if path.is_dir():
                    return JSONResponse({"error": "a folder has that name"}, status_code=400)
                write_atomically(path, await _read_body(request, ctx.max_upload_bytes))
        except Refused as error:
            return _refusal(error)
        except OSError as error:
            return JSONResponse({"error": f"cannot write that file: {error.strerror}"}, status_code=400)
        base = root.resolve()
        return _file_info(path, base) if full_info else path.relative_to(base).as_posix()

    @api.delete("/userdata/{name:path}")
    def delete_userdata(request: Request, name: str):
        try:
            path = user_path(root, _userdata_names(request)[0])
        except Refused as error:
            return _refusal(error)
        if not path.is_file():
            return JSONResponse({"error": "not found"}, status_code=404)
        path.unlink()
        return Response(status_code=204)

    # jobs
    @api.get("/jobs")
    def list_jobs(request: Request):
        query = request.query_params
        wanted = {s for s in query.get("status", "").split(",") if s}
        jobs = [job_entry(job) for job in _all_jobs(ctx)]
        if wanted:
            jobs = [j for j in jobs if j["status"] in wanted]
        if query.get("workflow_id"):
            jobs = [j for j in jobs if j["workflow_id"] == query["workflow_id"]]
        jobs.sort(key=lambda j: j["create_time"] or 0, reverse=query.get("sort_order", "desc") != "asc")
        offset = max(int(query["offset"]), 0) if query.get("offset", "").isdigit() else 0
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        page = jobs[offset:offset + limit] if limit is not None else jobs[offset:]
        return {"jobs": page, "pagination": {"offset": offset, "limit": limit if limit is not None else len(page),
                                             "total": len(jobs), "has_more": offset + len(page) < len(jobs)}}

    @api.get("/jobs/{job_id}")
    def get_job(job_id: str):
        job = ctx.queue.get(job_id)
        if job is None:
            return JSONResponse({"error": "job not found"}, status_code=404)
        return job_entry(job, detail=True)

    @api.post("/jobs/cancel")
    async def cancel_jobs(request: Request):
        try:
            body = json.loads(await _read_body(request, ctx.max_upload_bytes) or b"{}")
        except (Refused, ValueError):
            body = None
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return JSONResponse({"error": "expected {\"job_ids\": [...]}"}, status_code=400)
        for job_id in ids:
            ctx.queue.cancel(job_id)
        return Response(status_code=200)

    @api.post("/jobs/{job_id}/cancel")
    def cancel_job(job_id: str):
        if ctx.queue.get(job_id) is None:
            return JSONResponse({"error": "job not found"}, status_code=404)
        ctx.queue.cancel(job_id)
        return Response(status_code=200)

    # what the editor asks about the server
    @api.get("/features")
    def features():
        return {"supports_preview_metadata": False, "max_upload_size": ctx.max_upload_bytes}

    @api.get("/i18n")
    def i18n():
        return {}  # translations of custom nodes: we have none

    @api.get("/global_subgraphs")
    def global_subgraphs():
        return {}

    @api.get("/internal/folder_paths")
    def folder_paths():
        # Where each kind of model goes, shown when a workflow names a model that is missing.
        return {kind: [str(d) for d in ctx.folders.model_dirs(kind)] for kind in MODEL_KINDS}

    @api.get("/experiment/models")
    def model_folders():
        return [{"name": kind, "folders": []} for kind in MODEL_KINDS]

    @api.get("/experiment/models/{folder}")
    def models_in_folder(folder: str):
        if folder not in MODEL_KINDS:
            return JSONResponse({"error": "unknown model folder"}, status_code=404)
        return [{"name": name, "pathIndex": 0} for name in ctx.folders.list(folder)]

    # our workflows as the editor's templates
    @api.get("/workflow_templates")
    def workflow_templates():
        return {TEMPLATE_MODULE: _template_names(workflows_dir)}

    @api.get("/workflow_templates/{module}/{filename}")
    def workflow_template(module: str, filename: str):
        name, _, extension = filename.rpartition(".")
        if module != TEMPLATE_MODULE or extension not in ("json", "jpg") or name not in _template_names(workflows_dir):
            return JSONResponse({"error": "no such template"}, status_code=404)
        workflow = json.loads((workflows_dir / f"{name}.json").read_text(encoding="utf-8"))
        graph = editor_workflow(ctx, workflow)
        if extension == "jpg":  # the template browser's thumbnail
            return Response(thumbnail(graph), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
        return graph

    @api.get("/templates/index.json")
    def core_templates():
        return []  # ComfyUI's own templates are a separate package, not shipped

    @api.get("/templates/index_logo.json")
    def template_logos():
        return {}

    return api
