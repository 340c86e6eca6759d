"""One process, one port: the Gradio tabs at /, the graph editor at /graph/, the ComfyUI API (at / and
/api/), the A1111 API at /sdapi/v1/, all submitting to one job queue, behind one security layer."""
from __future__ import annotations

import math
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from ..nodes import folders as folders_module
from .context import ServerContext
from .serve_options import ServeOptions, device_options

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"


def create_context(options: ServeOptions) -> ServerContext:
    """The folders, registry, event hub and queue (not yet started) for these options."""
    from ..nodes.registry import core_nodes
    from .events import EventHub
    from .jobs import JobQueue
    from ..nodes.formats import file_hashes
    from . import model_hashes_api
    from .model_download_api import Downloads

    data_dir = Path(options.data_dir or DEFAULT_DATA_DIR)
    data_dir.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(options.temp_dir or data_dir / "temp")
    folders = folders_module.configure(models_dir=options.models_dir, output_dir=options.output_dir,
                                       input_dir=options.input_dir, temp_dir=temp_dir,
                                       extra_model_paths=options.extra_model_paths)
    for path in (folders.output_dir, folders.input_dir):
        path.mkdir(parents=True, exist_ok=True)
    folders_module.fresh_temp_dir(temp_dir)
    registry = core_nodes()
    hub = EventHub()
    ray_workers = None
    if options.workers == "ray":
        from .workers.ray_worker import RayOptions, RayWorkers

        ray_workers = RayWorkers(RayOptions(
            address=options.ray_address, workers=options.ray_workers, max_pixels=ServerContext.max_pixels,
            models_dir=str(options.models_dir) if options.models_dir else None,
            extra_model_paths=str(options.extra_model_paths) if options.extra_model_paths else None,
            device_options=device_options(options)),
            registry, folders)
    queue = JobQueue(data_dir / "jobs.sqlite3", registry, hub, workers=ray_workers.start() if ray_workers else None)
    ctx = ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=data_dir,
                        preview_method=options.preview_method, ray_workers=ray_workers)
    ctx.downloads = Downloads(ctx)
    file_hashes.configure(data_dir / file_hashes.CACHE_FILE, on_chunk=model_hashes_api.publisher(ctx))
    queue.executor.max_pixels = ctx.max_pixels  # every node's output, not only the sizes a request names
    if ray_workers is not None:
        ray_workers.attach(queue)
    return ctx


def create_app(ctx: ServerContext, options: ServeOptions | None = None, *, with_ui: bool = True) -> FastAPI:
    """The whole application. The queue's worker starts and stops with the app."""
    from ..nodes.formats import file_hashes
    from . import (a1111_api, a1111_controlnet, a1111_extras, comfy_api, graph_editor, model_download_api,
                   model_hashes_api)
    from .security import HostPolicy, SecurityMiddleware

    options = options or ServeOptions()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        ctx.queue.start()
        file_hashes.current().enqueue_folders(ctx.folders)  # A1111's hashes, in the background
        try:
            yield
        finally:
            file_hashes.current().stop()
            ctx.queue.stop()

    # No generated API docs unless asked for (--api-docs): they list every route to anyone who can reach
    # the port. Gradio's own app would serve them at /openapi.json too: turned off below.
    app = FastAPI(title="Inkwash", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if options.api_docs else None, lifespan=lifespan)
    # Before the ComfyUI routes: their GET /api/models/{folder} would take /api/models/downloads.
    app.include_router(model_download_api.router(ctx))
    app.include_router(model_hashes_api.router(ctx))
    comfy = comfy_api.router(ctx)
    install_error_handlers(app)
    app.include_router(comfy)
    app.include_router(comfy, prefix="/api")
    app.include_router(a1111_extras.router(ctx))  # before a1111_api: its /upscalers lists model files too
    app.include_router(a1111_api.router(ctx))
    app.include_router(a1111_controlnet.router(ctx))
    editor = graph_editor.router(ctx)  # the editor calls its routes under /api (and /graph/api)
    app.include_router(editor)
    app.include_router(editor, prefix="/api")
    graph_editor.mount_editor(app, ctx)
    if with_ui:
        import gradio as gr

        from .tabs import allowed_paths, build_ui

        # Gradio serves only files under folders it is told about: the saved images and previews.
        app = gr.mount_gradio_app(app, build_ui(ctx), path="/", allowed_paths=allowed_paths(ctx),
                                  app_kwargs={"docs_url": None, "redoc_url": None, "openapi_url": None})
        _bad_gradio_calls_are_400(app)
    app.add_middleware(SecurityMiddleware, credentials=options.credentials,
                       allowed_hosts=HostPolicy.for_bind(options.host, options.allowed_hosts),
                       max_upload_bytes=ctx.max_upload_bytes)
    return app


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI's 422 answer echoes the bad input, and JSON has no NaN or Infinity: those are shown as
    text instead, so the answer to a bad number is never a 500."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    async def validation_error(_request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation_error)


def _bad_gradio_calls_are_400(app: FastAPI) -> None:
    """Gradio's /gradio_api/call/... routes raise TypeError / KeyError / ValueError on unknown
    parameters or endpoint names (a 500): answered 400 there, and left alone on every other route."""
    from fastapi.responses import JSONResponse
    from starlette.routing import Mount

    async def bad_call(request, exc: Exception):
        if "/gradio_api/call/" not in request.url.path:
            raise exc
        return JSONResponse({"detail": f"bad call of {request.url.path}: {type(exc).__name__}: {exc}"[:500]},
                            status_code=400)

    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, FastAPI):
            for error in (TypeError, KeyError, ValueError):
                route.app.add_exception_handler(error, bad_call)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def serve(options: ServeOptions) -> None:
    import uvicorn

    from .security import tls_kwargs

    ctx = create_context(options)
    app = create_app(ctx, options)
    print(f"Inkwash is running at {options.url}  (graph editor: {options.url.rstrip('/')}/graph/)", flush=True)
    try:
        uvicorn.run(app, **uvicorn_options(options), log_level="warning", **tls_kwargs(options))
    finally:
        if ctx.ray_workers is not None:
            ctx.ray_workers.shutdown()


def uvicorn_options(options: ServeOptions) -> dict:
    """uvicorn.run / uvicorn.Config arguments: the address, and connections that time out and are capped
    (webui/connection_limits.py), with accept errors logged at most once per 10 s."""
    from .connection_limits import guarded_protocol, quiet_accept_errors

    quiet_accept_errors()
    return {"host": options.host, "port": options.port, "http": guarded_protocol(), "timeout_keep_alive": 5}
