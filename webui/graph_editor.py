"""The ComfyUI graph editor (the `comfyui-frontend-package` wheel) served at /graph/ against our API.

The editor derives its API base from its page's path: opened at /graph/, it asks for /graph/api/...,
/graph/ws and /graph/templates/... . `mount_editor` routes those to the same handlers as /api/..., /ws
and /templates/... (one set of routes, one auth layer), serves the editor's files, and sends a
Content-Security-Policy with the page that keeps the browser from contacting any other host (the
bundle knows of release checks, a node registry, sign-in, telemetry and template media elsewhere).

`router(ctx)` holds the routes the editor needs besides ComfyUI's core API (webui/comfy_api.py):
users, settings and user data files (saved workflows; webui/user_files.py), the jobs list, feature flags, model folders and
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
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..nodes.folders import MODEL_KINDS, REPO_ROOT
from ..nodes.registry import object_info
from .context import ServerContext
from . import user_files
from .graph_layout import api_to_ui
from .json_errors import Refused, RefusalsAsJSON

log = logging.getLogger(__name__)

EDITOR_PATH = "/graph"
TEMPLATE_MODULE = "inkwash"
DEFAULT_TEMPLATE = "txt2img"
WORKFLOWS_DIR = REPO_ROOT / "workflows"
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
    return [*ctx.queue.running_jobs(), *ctx.queue.pending(), *ctx.queue.history(None)]


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

def router(ctx: ServerContext, workflows_dir: Path = WORKFLOWS_DIR,
           default_settings: Mapping[str, Any] = DEFAULT_SETTINGS) -> APIRouter:
    api = APIRouter(route_class=RefusalsAsJSON)
    api.include_router(user_files.router(ctx, default_settings))

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
            raise Refused(404, "job not found")
        return job_entry(job, detail=True)

    @api.post("/jobs/cancel")
    async def cancel_jobs(request: Request):
        try:
            body = json.loads(await user_files.read_body(request, ctx.max_upload_bytes) or b"{}")
        except (Refused, ValueError):
            body = None
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise Refused(400, "expected {\"job_ids\": [...]}")
        for job_id in ids:
            ctx.queue.cancel(job_id)
        return Response(status_code=200)

    @api.post("/jobs/{job_id}/cancel")
    def cancel_job(job_id: str):
        if ctx.queue.get(job_id) is None:
            raise Refused(404, "job not found")
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
            raise Refused(404, "unknown model folder")
        return [{"name": name, "pathIndex": 0} for name in ctx.folders.list(folder)]

    # our workflows as the editor's templates
    @api.get("/workflow_templates")
    def workflow_templates():
        return {TEMPLATE_MODULE: _template_names(workflows_dir)}

    @api.get("/workflow_templates/{module}/{filename}")
    def workflow_template(module: str, filename: str):
        name, _, extension = filename.rpartition(".")
        if module != TEMPLATE_MODULE or extension not in ("json", "jpg") or name not in _template_names(workflows_dir):
            raise Refused(404, "no such template")
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
