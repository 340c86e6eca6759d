"""The user's files and settings, as ComfyUI's frontend stores them on the server: /users, /settings,
/userdata (saved workflows, subgraphs, user.css) and /v2/userdata, under `data/user/default/`.

Every name that comes from a request goes through `user_path`, which refuses absolute names, `..`
parts and anything that resolves (symlinks followed) outside the user folder. Errors are answered as
the frontend expects them, `{"error": message}` (json_errors.Refused without a kind).
"""
from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..nodes.folders import write_atomically
from .context import ServerContext
from .json_errors import Refused, RefusalsAsJSON

SETTINGS_FILE = "comfy.settings.json"


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


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes without reading further."""
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


def router(ctx: ServerContext, default_settings: Mapping[str, Any]) -> APIRouter:
    api = APIRouter(route_class=RefusalsAsJSON)
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
        raise Refused(400, "Inkwash serves a single user")

    # settings
    @api.get("/settings")
    def get_settings():
        return settings.all()

    @api.post("/settings")
    async def post_settings(request: Request):
        try:
            values = json.loads(await read_body(request, ctx.max_upload_bytes) or b"null")
        except ValueError:
            values = None
        if not isinstance(values, dict):
            raise Refused(400, "expected a JSON object of settings")
        settings.update(values)
        return Response(status_code=200)

    @api.get("/settings/{setting_id}")
    def get_setting(setting_id: str):
        return JSONResponse(settings.get(setting_id))

    @api.post("/settings/{setting_id}")
    async def post_setting(setting_id: str, request: Request):
        try:
            value = json.loads(await read_body(request, ctx.max_upload_bytes))
        except ValueError:
            raise Refused(400, "expected a JSON value") from None
        settings.update({setting_id: value})
        return Response(status_code=200)

    # user data files
    @api.get("/userdata")
    def list_userdata(request: Request):
        query = request.query_params
        directory = query.get("dir", "")
        if not directory:
            raise Refused(400, "dir is required")
        path = user_path(root, directory)
        if not path.is_dir():
            raise Refused(404, "directory not found")
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
            raise Refused(400, error.message) from None  # this route answers every bad name with 400
        if not target.exists():
            if target == base:
                return []
            raise Refused(404, "not found")
        if not target.is_dir():
            raise Refused(400, "not a directory")
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
        path = user_path(root, _userdata_names(request)[0])
        is_css = path == root.resolve() / "user.css"
        if not path.is_file():
            if is_css:
                return Response("", media_type="text/css")  # the editor's page always links one
            raise Refused(404, "not found")
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
                    raise Refused(404, "not found")
                if dest.exists() and not overwrite:
                    raise Refused(409, "file already exists")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, dest)
                path = dest
            else:
                path = user_path(root, names[0])
                if path.exists() and not overwrite:
                    raise Refused(409, "file already exists")
                if path.is_dir():
                    raise Refused(400, "a folder has that name")
                write_atomically(path, await read_body(request, ctx.max_upload_bytes))
        except OSError as error:
            raise Refused(400, f"cannot write that file: {error.strerror}") from None
        base = root.resolve()
        return _file_info(path, base) if full_info else path.relative_to(base).as_posix()

    @api.delete("/userdata/{name:path}")
    def delete_userdata(request: Request, name: str):
        path = user_path(root, _userdata_names(request)[0])
        if not path.is_file():
            raise Refused(404, "not found")
        path.unlink()
        return Response(status_code=204)

    return api
