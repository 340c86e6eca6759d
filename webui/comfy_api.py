"""ComfyUI's HTTP and websocket API, so ComfyUI clients, scripts and its frontend talk to Inkwash unchanged.

Routes and response shapes follow ComfyUI's server.py (the lead mounts this router at "" and at "/api",
as ComfyUI registers every route twice). Where ComfyUI answers a bad request with an empty 400/404 or
a 500, these routes answer with the status and a JSON body saying what was wrong. Every file name that
comes from a request goes through `safe_path`, which resolves symlinks before checking containment.
"""
from __future__ import annotations

import io
import json
import math
import mimetypes
import re
import os
import platform
import struct
import sys
import threading
import urllib.parse
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.websockets import WebSocketDisconnect

from ..nodes.formats import preview_frames
from ..nodes.folders import KIND_ALIASES, MODEL_KINDS, UnsafePath, safe_path
from ..nodes.registry import object_info
from .context import ServerContext, oversized_nodes
from .events import SubscriptionClosed
from . import preview_method
from .json_errors import Refused, RefusalsAsJSON
from .jobs import PREVIEW_METHOD_KEY, DuplicateJobId, InvalidWorkflow

_PROMPT_ID = re.compile(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}")

# Extra data ComfyUI never stores (API keys for its paid nodes); dropped before a job is queued.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")

UPLOAD_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
UPLOAD_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF")
# Uploads may be bigger than what a request may generate (photos to inpaint), but not unbounded:
# a small compressed file can declare a huge canvas that would take gigabytes to decode.
MAX_UPLOAD_PIXELS = 8192 * 8192

# Served with their own type; anything else (html, svg, js ...) goes out as a download, so a file
# in an output folder can never run script in the page's origin.
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff",
                "image/avif", "video/mp4", "video/webm", "audio/mpeg", "audio/wav", "audio/x-wav",
                "audio/flac", "audio/ogg", "application/json"}

FOLDER_TYPES = ("output", "input", "temp")
MAX_CLIENT_ID = 128

# Choosing a free upload name and moving the file there happen under this lock, so two uploads of
# one name in this process never overwrite each other.
_upload_lock = threading.Lock()


def _refused(status: int, kind: str, message: str, details: str = "", **body: Any) -> Refused:
    """A refusal in ComfyUI's error shape."""
    return Refused(status, message, kind=kind, details=details, **body)


# -- request helpers -------------------------------------------------------------------------------

async def _json_object(request: Request, *, optional: bool = False, **error_body: Any) -> dict:
    raw = await request.body()
    if not raw.strip() and optional:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refused(400, "invalid_json", "Request body is not valid JSON", str(exc), **error_body) from None
    if not isinstance(body, dict):
        raise _refused(400, "invalid_request", "Request body must be a JSON object",
                       f"got {type(body).__name__}", **error_body)
    return body


def _id_list(body: dict, key: str) -> list[str]:
    ids = body.get(key)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _refused(400, "invalid_request", f"'{key}' must be a list of prompt ids")
    return ids


def _folder(ctx: ServerContext, kind: str | None) -> Path:
    kind = kind or "output"
    if kind not in FOLDER_TYPES:
        raise _refused(400, "invalid_type", f"Unknown folder type {kind!r}", "expected output, input or temp")
    return Path(getattr(ctx.folders, f"{kind}_dir"))


def _annotated(filename: str) -> tuple[str, str | None]:
    """ComfyUI's `name.png [output]` form: the name, and the folder type it names (if any)."""
    for kind in FOLDER_TYPES:
        suffix = f" [{kind}]"
        if filename.endswith(suffix):
            return filename[:-len(suffix)], kind
    return filename, None


def _plain_name(name: str, what: str = "filename") -> str:
    """A bare file name: no folders, no `..`, nothing absolute."""
    if (not name or "\x00" in name or "/" in name or "\\" in name or name in (".", "..")
            or PurePosixPath(name).name != name or (os.name == "nt" and ":" in name)):
        raise _refused(400, "invalid_filename", f"Invalid {what} {name!r}",
                       "a bare file name is expected, without folders or '..'")
    return name


def _subfolder(base: Path, subfolder: str) -> Path:
    """`base/subfolder`, refused (403, as ComfyUI) when it leaves `base`."""
    if not subfolder:
        return base.resolve()
    try:
        return safe_path(base, subfolder)
    except UnsafePath as exc:
        raise _refused(403, "forbidden_path", "Subfolder leaves its folder", str(exc)) from None


def _content_disposition(filename: str, disposition: str = "inline") -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f'{disposition}; filename="{ascii_name}"; filename*=UTF-8\'\'{urllib.parse.quote(filename)}'


def _image_bytes(image: Image.Image, fmt: str, **save_args: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


# -- queue items and history -----------------------------------------------------------------------

def _outputs_to_execute(ctx: ServerContext, workflow: Mapping) -> list[str]:
    outputs = []
    for node_id, node in workflow.items():
        cls = ctx.registry.get(node.get("class_type")) if isinstance(node, Mapping) else None
        if cls is not None and cls.output_node:
            outputs.append(str(node_id))
    return outputs


def _extra_data(job: Any) -> dict:
    extra = {k: v for k, v in (job.extra or {}).items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
    if job.client_id is not None:
        extra["client_id"] = job.client_id
    return extra


def _queue_item(ctx: ServerContext, job: Any) -> list:
    """ComfyUI's queue tuple: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
    outputs = getattr(job, "output_nodes", None) or _outputs_to_execute(ctx, job.workflow)
    return [job.number, job.id, job.workflow, _extra_data(job), list(outputs)]


def _in_history(job: Any) -> bool:
    # Jobs removed from the queue before they ran never reach ComfyUI's history.
    return job is not None and job.done and job.status != "cancelled"


def _history_entry(ctx: ServerContext, job: Any) -> dict:
    outputs = job.outputs or {}
    return {
        "prompt": _queue_item(ctx, job),
        "outputs": outputs,
        "status": {"status_str": "success" if job.status == "success" else "error",
                   "completed": job.status == "success",
                   "messages": job.messages or []},
        "meta": {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                           "real_node_id": node_id} for node_id in outputs},
    }


def _query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _refused(400, "invalid_request", f"{name} must be an integer", f"got {raw!r}") from None


# -- prompts ---------------------------------------------------------------------------------------

async def _submit(ctx: ServerContext, body: dict) -> dict | Response:
    no_node_errors = {"node_errors": {}}
    prompt = body.get("prompt")
    if prompt is None:
        raise _refused(400, "no_prompt", "No prompt provided", "the body needs a 'prompt' (API-format workflow)",
                       **no_node_errors)
    if not isinstance(prompt, dict):
        raise _refused(400, "invalid_prompt", "The prompt must be a JSON object of nodes keyed by id",
                       f"got {type(prompt).__name__}", **no_node_errors)
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise _refused(400, "invalid_request", "extra_data must be a JSON object", **no_node_errors)
    client_id = body.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID):
        raise _refused(400, "invalid_request", "client_id must be a string of at most 128 characters",
                       **no_node_errors)
    too_big = oversized_nodes(prompt, ctx.max_pixels)
    if too_big:
        raise _refused(400, "prompt_outputs_failed_validation", "Prompt outputs failed validation",
                       "; ".join(e["errors"][0]["message"] for e in too_big.values()), node_errors=too_big)

    prompt_id = _client_prompt_id(body.get("prompt_id"))
    number = _client_number(body.get("number"))
    # A client-chosen "partial_execution_targets" is not honoured: every output node runs.
    extra = {k: v for k, v in extra_data.items() if k not in SENSITIVE_EXTRA_DATA_KEYS and k != "client_id"}
    extra["source"] = "comfy"
    extra[PREVIEW_METHOD_KEY] = preview_method.resolve(extra_data.get(PREVIEW_METHOD_KEY), ctx.preview_method)
    try:
        # Validation reads the input folder (LoadImage hashes its file): keep it off the event loop.
        job = await run_in_threadpool(ctx.queue.submit, prompt, client_id=client_id, extra=extra,
                                      front=bool(body.get("front")), job_id=prompt_id, number=number)
    except InvalidWorkflow as exc:
        return JSONResponse(exc.response(), status_code=400)
    except DuplicateJobId:
        raise _refused(400, "duplicate_prompt_id", f"prompt_id {prompt_id!r} is already in use",
                       "each prompt needs an id of its own; leave prompt_id out to get a new one",
                       **no_node_errors) from None
    return {"prompt_id": job.id, "number": job.number, "node_errors": {}}


def _client_prompt_id(value: Any) -> str | None:
    """A client's own prompt_id (ComfyUI takes it as given): a UUID, 32 hex digits with or without
    dashes, kept exactly as sent so the client finds it in events and /history."""
    if value is None:
        return None
    if not isinstance(value, str) or not _PROMPT_ID.fullmatch(value):
        raise _refused(400, "invalid_prompt_id", "prompt_id must be a UUID string",
                       f"got {value!r}; e.g. str(uuid.uuid4()), or leave it out", node_errors={})
    return value


def _client_number(value: Any) -> int | float | None:
    """ComfyUI's "number": the queue position itself (lower runs first; it overrides "front")."""
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise _refused(400, "invalid_request", "number must be a finite number (the queue position)",
                       f"got {value!r}", node_errors={})
    return int(number) if number.is_integer() and not isinstance(value, float) else number


# -- files -----------------------------------------------------------------------------------------

def _view(ctx: ServerContext, request: Request) -> Response:
    query = request.query_params
    filename = query.get("filename")
    if not filename:
        raise _refused(400, "invalid_request", "filename is required")
    filename, annotated_type = _annotated(filename)
    _plain_name(filename)
    base = _folder(ctx, annotated_type or query.get("type"))
    directory = _subfolder(base, query.get("subfolder", ""))
    try:
        path = safe_path(base, str(directory.relative_to(base.resolve()) / filename))
    except UnsafePath as exc:
        raise _refused(403, "forbidden_path", "File leaves its folder", str(exc)) from None
    if not path.is_file():
        raise _refused(404, "not_found", f"File {filename!r} not found")

    channel = query.get("channel", "rgba")
    if channel not in ("rgba", "rgb", "a"):
        raise _refused(400, "invalid_request", f"Unknown channel {channel!r}", "expected rgba, rgb or a")
    preview = query.get("preview")
    if preview is None and channel == "rgba":
        media_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        inline = media_type in INLINE_TYPES
        return FileResponse(path, media_type=media_type if inline else "application/octet-stream",
                            headers={"Content-Disposition": _content_disposition(
                                filename, "inline" if inline else "attachment"),
                                "X-Content-Type-Options": "nosniff"})
    try:
        with Image.open(path) as image:
            if preview is not None:
                body, media_type, name = _preview(image, preview, channel, filename)
            else:
                body, media_type, name = _channel(image, channel), "image/png", filename
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise _refused(400, "not_an_image", f"{filename!r} cannot be read as an image", str(exc)) from None
    return Response(body, media_type=media_type,
                    headers={"Content-Disposition": _content_disposition(name),
                             "X-Content-Type-Options": "nosniff"})


def _preview(image: Image.Image, preview: str, channel: str, filename: str) -> tuple[bytes, str, str]:
    """ComfyUI's `preview=webp;90` / `preview=jpeg;75`: a re-encoded copy (webp when alpha is asked for)."""
    parts = preview.split(";")
    fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
    quality = int(parts[-1]) if parts[-1].isdigit() else 90
    if fmt == "jpeg" or channel == "rgb":
        image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA")
    stem = os.path.splitext(filename)[0]
    return _image_bytes(image, fmt.upper(), quality=max(1, min(quality, 100))), f"image/{fmt}", f"{stem}.{fmt}"


def _channel(image: Image.Image, channel: str) -> bytes:
    if channel == "rgb":
        return _image_bytes(image.convert("RGB"), "PNG")
    # channel "a": the alpha on a black image, as ComfyUI's mask editor expects; opaque when there is none.
    alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
    mask = Image.new("RGBA", image.size)
    mask.putalpha(alpha)
    return _image_bytes(mask, "PNG")


def _checked_image(data: bytes) -> Image.Image:
    """The upload decoded, or Refused: not an image, an unsupported format, or too many pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                if probe.format not in UPLOAD_FORMATS:
                    raise _refused(400, "invalid_image", f"Unsupported image format {probe.format}",
                                   f"accepted: {', '.join(UPLOAD_FORMATS)}")
                if probe.width * probe.height > MAX_UPLOAD_PIXELS:
                    raise _refused(413, "image_too_large",
                                   f"Image is {probe.width}x{probe.height}, more than {MAX_UPLOAD_PIXELS} pixels")
                probe.verify()
            image = Image.open(io.BytesIO(data))
            image.load()  # verify() does not decode every format; a full decode catches truncated files
            return image
    except Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _refused(413, "image_too_large", "Image has too many pixels", str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error, EOFError) as exc:
        raise _refused(400, "invalid_image", "Upload is not a valid image", str(exc) or type(exc).__name__) from None


def _store_upload(directory: Path, base: Path, filename: str, data: bytes, overwrite: bool) -> str:
    """Write `data` as `directory/filename`; unless `overwrite`, an existing different file keeps its
    name and the upload becomes `name (1).ext` (an identical file is reused). Returns the name used."""
    stem, ext = os.path.splitext(filename)
    temp = directory / f".upload-{uuid.uuid4().hex}.tmp"
    temp.write_bytes(data)
    try:
        with _upload_lock:
            name, counter = filename, 1
            while True:
                try:
                    target = safe_path(base, str(directory.relative_to(base.resolve()) / name))
                except UnsafePath as exc:
                    raise _refused(403, "forbidden_path", "Upload target leaves its folder", str(exc)) from None
                if not target.exists() or (overwrite and target.is_file()):
                    os.replace(temp, target)
                    return name
                if not overwrite and target.is_file() and target.read_bytes() == data:
                    return name  # ComfyUI's duplicate check: the same image uploaded again
                name = f"{stem} ({counter}){ext}"
                counter += 1
    finally:
        temp.unlink(missing_ok=True)


async def _upload(ctx: ServerContext, request: Request, *, as_mask: bool) -> dict:
    try:
        form = await request.form(max_files=2, max_fields=10)
    except (MultiPartException, StarletteHTTPException, ValueError) as exc:  # a malformed multipart body
        raise _refused(400, "invalid_request", "Expected a multipart/form-data upload", str(exc)) from None
    try:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise _refused(400, "invalid_request", "The form needs an 'image' file field")
        filename = _plain_name(upload.filename or "", "upload file name")
        if not filename.lower().endswith(UPLOAD_EXTENSIONS) or filename.startswith("."):
            raise _refused(400, "invalid_filename", f"Upload name {filename!r} needs an image extension",
                           f"accepted: {', '.join(UPLOAD_EXTENSIONS)}")
        data = await upload.read(ctx.max_upload_bytes + 1)
        if len(data) > ctx.max_upload_bytes:
            raise _refused(413, "upload_too_large", f"Upload is larger than {ctx.max_upload_bytes} bytes")
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        original_ref = form.get("original_ref") if as_mask else None
    finally:
        await form.close()
    if as_mask and not isinstance(original_ref, str):
        raise _refused(400, "invalid_request", "The form needs an 'original_ref' JSON field")

    def save() -> str:
        image = _checked_image(data)
        stored = data
        if as_mask:
            stored = _masked_original(ctx, original_ref, image)
        base = _folder(ctx, kind)
        directory = _subfolder(base, subfolder)
        directory.mkdir(parents=True, exist_ok=True)
        directory = _subfolder(base, subfolder)  # re-check now it exists (a symlink planted meanwhile)
        return _store_upload(directory, base, filename, stored, overwrite)

    name = await run_in_threadpool(save)
    return {"name": name, "subfolder": subfolder, "type": kind}


def _masked_original(ctx: ServerContext, original_ref: str, mask_image: Image.Image) -> bytes:
    """ComfyUI's /upload/mask: the referenced image with the uploaded image's alpha as its alpha,
    as a PNG keeping the original's text chunks (its workflow)."""
    try:
        ref = json.loads(original_ref)
    except ValueError as exc:
        raise _refused(400, "invalid_request", "original_ref is not valid JSON", str(exc)) from None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise _refused(400, "invalid_request", "original_ref needs a filename")
    filename, annotated_type = _annotated(ref["filename"])
    _plain_name(filename, "original filename")
    base = _folder(ctx, annotated_type or ref.get("type") or "output")
    directory = _subfolder(base, str(ref.get("subfolder") or ""))
    try:
        path = safe_path(base, str(directory.relative_to(base.resolve()) / filename))
    except UnsafePath as exc:
        raise _refused(403, "forbidden_path", "Original image leaves its folder", str(exc)) from None
    if not path.is_file():
        raise _refused(404, "not_found", f"Original image {filename!r} not found")
    original = _checked_image(path.read_bytes())
    info = PngInfo()
    for key, value in getattr(original, "text", {}).items():
        info.add_text(key, value)
    alpha = mask_image.convert("RGBA").getchannel("A")
    if alpha.size != original.size:
        alpha = alpha.resize(original.size, Image.Resampling.BILINEAR)
    combined = original.convert("RGBA")
    combined.putalpha(alpha)
    return _image_bytes(combined, "PNG", compress_level=4, pnginfo=info)


# -- system ----------------------------------------------------------------------------------------

def _inkwash_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("inkwash")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


def _system_stats(ctx: ServerContext) -> dict:
    import psutil
    import torch

    memory = psutil.virtual_memory()
    return {
        "system": {
            "os": os.name,
            "ram_total": memory.total,
            "ram_free": memory.available,
            "comfyui_version": _inkwash_version(),
            "python_version": sys.version,
            "pytorch_version": torch.__version__,
            "embedded_python": False,
            "argv": [],  # never the real command line: it may carry passwords
            "platform": platform.platform(),
        },
        "devices": [_worker_device(worker) for worker in ctx.queue.workers],
    }


def _worker_device(worker) -> dict:
    """A worker's device as ComfyUI lists one, with the worker's name (a remote one's name in it too)."""
    device = dict(worker.device())
    if worker.remote:
        device["name"] = f"{device.get('name')} ({worker.name})"
    return {**device, "worker": worker.name}


def _model_kinds() -> list[str]:
    return [*MODEL_KINDS, *KIND_ALIASES]


# -- websocket -------------------------------------------------------------------------------------

# What sending to or reading from a client that has gone raises.
_CLIENT_GONE = (WebSocketDisconnect, RuntimeError, OSError)


async def _forward(ctx: ServerContext, websocket: WebSocket, subscription: Any) -> None:
    """The hub's events for this client, as ComfyUI's JSON messages and binary preview frames."""
    while True:
        try:
            event, data = await subscription.get()
        except SubscriptionClosed:
            # This client fell too far behind to be caught up event by event: closing makes a
            # ComfyUI client reconnect and read the outcome from /history.
            await websocket.close(code=1013, reason="client too slow; reconnect")
            return
        preview = None
        if event == "progress" and "preview" in data:
            data = dict(data)  # the hub shares one dict among subscribers: copy, never mutate
            preview = data.pop("preview")
        await websocket.send_text(json.dumps({"type": event, "data": data}, default=str))
        if preview is not None:
            await websocket.send_bytes(await run_in_threadpool(preview_frames.encode, preview))


async def _listen(ctx: ServerContext, websocket: WebSocket) -> None:
    """Read until the client goes; answer ComfyUI's feature-flag handshake."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            incoming = json.loads(message.get("text") or "null")
        except ValueError:
            continue
        if isinstance(incoming, dict) and incoming.get("type") == "feature_flags":
            flags = {"supports_preview_metadata": False, "max_upload_size": ctx.max_upload_bytes}
            await websocket.send_text(json.dumps({"type": "feature_flags", "data": flags}))


async def _websocket_session(ctx: ServerContext, websocket: WebSocket) -> None:
    client_id = websocket.query_params.get("clientId") or uuid.uuid4().hex
    if len(client_id) > MAX_CLIENT_ID:
        await websocket.close(code=1008, reason="clientId too long")
        return
    await websocket.accept()
    subscription = ctx.hub.subscribe(client_id)
    try:
        status = {"status": {"exec_info": {"queue_remaining": ctx.queue.remaining()}}, "sid": client_id}
        await websocket.send_text(json.dumps({"type": "status", "data": status}))
        for running in ctx.queue.running_jobs():
            node = ctx.queue.progress_of(running.id).node
            if running.client_id == client_id and node is not None:
                # A client reconnecting mid-run learns which node is executing, as ComfyUI does.
                await websocket.send_text(json.dumps({"type": "executing", "data": {
                    "node": node, "display_node": node, "prompt_id": running.id}}))
        async with anyio.create_task_group() as group:
            async def until_either_ends(part: Callable[[], Awaitable[None]]) -> None:
                try:
                    await part()
                except _CLIENT_GONE:
                    pass
                group.cancel_scope.cancel()  # one side ended: stop the other

            group.start_soon(until_either_ends, lambda: _forward(ctx, websocket, subscription))
            group.start_soon(until_either_ends, lambda: _listen(ctx, websocket))
    except _CLIENT_GONE:
        pass  # the client went away; nothing the worker needs to know about
    finally:
        ctx.hub.unsubscribe(subscription)


# -- the router ------------------------------------------------------------------------------------

def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter(route_class=RefusalsAsJSON)

    @api.post("/prompt")
    async def post_prompt(request: Request):
        body = await _json_object(request, node_errors={})
        return await _submit(ctx, body)

    @api.get("/prompt")
    def get_prompt():
        return {"exec_info": {"queue_remaining": ctx.queue.remaining()}}

    @api.get("/queue")
    def get_queue():
        return {"queue_running": [_queue_item(ctx, job) for job in ctx.queue.running_jobs()],
                "queue_pending": [_queue_item(ctx, job) for job in ctx.queue.pending()]}

    @api.post("/queue")
    async def post_queue(request: Request):
        body = await _json_object(request)
        if body.get("clear"):
            ctx.queue.clear_pending()
        if "delete" in body:
            for job_id in _id_list(body, "delete"):
                job = ctx.queue.get(job_id)
                if job is not None and job.status == "pending":  # running jobs stop via /interrupt
                    ctx.queue.cancel(job_id)
        return Response(status_code=200)

    @api.get("/history")
    def get_history(request: Request):
        max_items, offset = _query_int(request, "max_items"), _query_int(request, "offset")
        if offset is None or offset < 0:
            jobs = ctx.queue.history(max_items)
        else:
            jobs = ctx.queue.history(None)[offset:]
            jobs = jobs[:max_items] if max_items is not None else jobs
        return {job.id: _history_entry(ctx, job) for job in jobs if _in_history(job)}

    @api.get("/history/{prompt_id}")
    def get_history_item(prompt_id: str):
        job = ctx.queue.get(prompt_id)
        return {job.id: _history_entry(ctx, job)} if _in_history(job) else {}

    @api.post("/history")
    async def post_history(request: Request):
        body = await _json_object(request)
        if body.get("clear"):
            ctx.queue.delete_history(None)
        if "delete" in body:
            ids = _id_list(body, "delete")
            if ids:
                ctx.queue.delete_history(ids)
        return Response(status_code=200)

    @api.get("/view")
    def view(request: Request):
        return _view(ctx, request)

    @api.post("/upload/image")
    async def upload_image(request: Request):
        return await _upload(ctx, request, as_mask=False)

    @api.post("/upload/mask")
    async def upload_mask(request: Request):
        return await _upload(ctx, request, as_mask=True)

    @api.post("/interrupt")
    async def interrupt(request: Request):
        try:
            body = await _json_object(request, optional=True)
        except Refused:
            body = {}  # ComfyUI treats an unreadable body as "interrupt whatever runs"
        prompt_id = body.get("prompt_id")
        ctx.queue.interrupt(prompt_id if isinstance(prompt_id, str) and prompt_id else None)
        return Response(status_code=200)

    @api.post("/free")
    async def free(request: Request):
        body = await _json_object(request, optional=True)
        if body.get("unload_models") or body.get("free_memory") or not body:
            await run_in_threadpool(ctx.queue.free_memory)
        return Response(status_code=200)

    @api.get("/object_info")
    def get_object_info():
        return object_info(dict(ctx.registry))

    @api.get("/object_info/{node_class}")
    def get_node_info(node_class: str):
        cls = ctx.registry.get(node_class)
        return {node_class: cls.object_info(node_class)} if cls is not None else {}

    @api.get("/system_stats")
    def system_stats():
        return _system_stats(ctx)

    @api.get("/embeddings")
    def embeddings():
        return [os.path.splitext(name)[0] for name in ctx.folders.list("embeddings")]

    @api.get("/models")
    def models():
        return _model_kinds()

    @api.get("/models/{folder}")
    def models_in(folder: str):
        if folder not in _model_kinds():
            raise _refused(404, "not_found", f"Unknown model folder {folder!r}")
        return ctx.folders.list(folder)

    @api.get("/extensions")
    def extensions():
        return []

    @api.websocket("/ws")
    async def ws(websocket: WebSocket):
        await _websocket_session(ctx, websocket)

    return api
