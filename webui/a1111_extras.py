"""AUTOMATIC1111's Extras API: /sdapi/v1/upscalers, /extra-single-image, /extra-batch-images.

Requests and responses have A1111's fields. The upscale runs as a workflow (webui/extras.py) on the
shared job queue; results come back as base64 PNGs and are not kept in output/ (A1111's API does not
save them either). Face restoration (GFPGAN, CodeFormer) is not available: switching it on is refused
with 422 rather than silently ignored.
"""
from __future__ import annotations

import base64
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from . import extras
from .a1111_api import bad_request, decode_base64_image
from .bad_request import BadRequest
from .context import ServerContext
from .jobs import InvalidWorkflow
from .json_errors import Refused


class ExtrasBaseRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    codeformer_weight: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    upscaling_resize: float = Field(default=2, ge=1, le=extras.MAX_SCALE, allow_inf_nan=False)
    upscaling_resize_w: int = Field(default=512, ge=1)
    upscaling_resize_h: int = Field(default=512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(default=0, ge=0, le=1, allow_inf_nan=False)
    upscale_first: bool = False  # order against face restoration, which isn't available

    def params(self) -> extras.ExtrasParams:
        for name in ("gfpgan_visibility", "codeformer_visibility"):
            if getattr(self, name) > 0:
                raise BadRequest(name, "face restoration is not available on this server; send 0")
        return extras.ExtrasParams(**{f: getattr(self, f) for f in extras.ExtrasParams.__dataclass_fields__})


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData]  # noqa: N815 (A1111's field name)


def router(ctx: ServerContext) -> APIRouter:
    routes = APIRouter(prefix="/sdapi/v1", tags=["A1111"])

    @routes.get("/upscalers")
    def upscalers():
        return extras.a1111_upscalers(ctx.folders)

    @routes.post("/extra-single-image")
    async def extra_single_image(req: ExtrasSingleImageRequest):
        result = await _run(ctx, req, [("image", req.image)])
        if isinstance(result, JSONResponse):
            return result
        info, images = result
        return {"html_info": info, "image": images[0] if images else ""}

    @routes.post("/extra-batch-images")
    async def extra_batch_images(req: ExtrasBatchImagesRequest):
        if not req.imageList:
            return bad_request(BadRequest("imageList", "expected at least one image"))
        fields = [(f"imageList[{i}].data", item.data) for i, item in enumerate(req.imageList)]
        result = await _run(ctx, req, fields)
        if isinstance(result, JSONResponse):
            return result
        info, images = result
        return {"html_info": info, "images": images}

    return routes


async def _run(ctx: ServerContext, req: ExtrasBaseRequest, fields: list[tuple[str, str]]
               ) -> tuple[str, list[str]] | JSONResponse:
    """(html_info, base64 PNGs in request order), or the error response."""
    stored: list[tuple[str, int, int]] = []
    try:
        params = req.params()
        images = [decode_base64_image(name, data, ctx.max_upload_bytes) for name, data in fields]
        stored = await run_in_threadpool(extras.store_inputs, ctx.folders, images)
        workflow, savers = await run_in_threadpool(extras.build_workflow, params, ctx.folders, stored,
                                                   save=False, max_pixels=ctx.max_pixels)
        try:
            job = ctx.queue.submit(workflow, extra={"source": "a1111"})
        except InvalidWorkflow as exc:
            return Refused(422, "", a1111="InvalidWorkflow", detail=exc.response()).response()
        done = await run_in_threadpool(ctx.queue.wait, job.id)
        if done.status != "success":
            message = (done.error or {}).get("exception_message") or f"upscale {done.status}"
            return Refused(500, message, a1111="ExtrasFailed").response()
        from .tabs.running import output_files

        paths = output_files(ctx, done.outputs or {}, savers)
        encoded = [base64.b64encode(path.read_bytes()).decode("ascii") for path in paths]
    except BadRequest as exc:
        return bad_request(exc)
    finally:
        for name, _, _ in stored:
            (ctx.folders.input_dir / name).unlink(missing_ok=True)
    return extras.html_info(extras.infotext(params)), encoded if req.show_extras_results else []
