"""Extras (A1111's postprocessing upscale) as a workflow: the Extras tab and /sdapi/v1/extra-* build it here.

An upscaler is A1111's: "None" (no upscale), "Lanczos", "Nearest", or an upscale model file from
upscale_models/ named by its path without extension ("4x-UltraSharp", "RealESRGAN_x4plus"). One image
becomes LoadImage -> the upscaler's nodes -> a resize to the exact size asked for -> a saver; with a
second upscaler and a visibility above 0, both results are blended (ImageBlend, normal, by visibility).
A model runs as many times (up to three, as A1111) as it takes to reach the size, then Lanczos
resizes to it. A batch is one workflow with a chain per image sharing the model loaders, so it is one
job in Queue & history.
"""
from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..nodes.folders import Folders, write_atomically
from ..nodes.formats.png_metadata import read_png_text
from ..nodes.runtime import upscale_models
from .bad_request import BadRequest
from .generation import store_input_image
from .parameters import model_upscalers

BUILTIN_UPSCALERS = {"None": None, "Lanczos": "lanczos", "Nearest": "nearest-exact"}
MAX_MODEL_PASSES = 3  # A1111 runs a model at most three times to reach the size asked for
MAX_SCALE = 8.0  # A1111's upscaling_resize limit
OUTPUT_PIXELS_PER_REQUEST_PIXEL = 16  # an upscale may be 16x a generation's pixel limit (4x each side)


@dataclass
class ExtrasParams:
    """A1111's extras upscale fields, named as its API names them."""

    resize_mode: int = 0  # 0: scale by upscaling_resize; 1: to upscaling_resize_w x upscaling_resize_h
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0


def upscaler_names(folders: Folders) -> list[str]:
    return [*BUILTIN_UPSCALERS, *model_upscalers(folders)]


def a1111_upscalers(folders: Folders) -> list[dict]:
    """/sdapi/v1/upscalers: A1111's UpscalerItem for each upscaler, built-ins first. A model's scale is
    read from its name ("4x", "x2") as A1111 lists them, without loading every file; 4 otherwise."""
    items = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
             for name in BUILTIN_UPSCALERS]
    for name, filename in model_upscalers(folders).items():
        path = folders.find("upscale_models", filename)
        items.append({"name": name, "model_name": Path(name).name, "model_path": str(path), "model_url": None,
                      "scale": _scale_in_name(name)})
    return items


def _scale_in_name(name: str) -> int:
    match = re.search(r"(?<![0-9])([1-8])[xX]|[xX]([1-8])(?![0-9])", Path(name).name)
    return int(match.group(1) or match.group(2)) if match else 4


def check(params: ExtrasParams, folders: Folders) -> None:
    """BadRequest naming the field for values A1111 would refuse or that name no upscaler."""
    if params.resize_mode not in (0, 1):
        raise BadRequest("resize_mode", f"must be 0 (scale by) or 1 (scale to), got {params.resize_mode!r}")
    if params.resize_mode == 0 and not 1.0 <= params.upscaling_resize <= MAX_SCALE:
        raise BadRequest("upscaling_resize", f"must be from 1 to {MAX_SCALE:g}, got {params.upscaling_resize}")
    if params.resize_mode == 1:
        for name in ("upscaling_resize_w", "upscaling_resize_h"):
            if not 1 <= getattr(params, name) <= 16384:
                raise BadRequest(name, f"must be from 1 to 16384, got {getattr(params, name)}")
    if not 0.0 <= params.extras_upscaler_2_visibility <= 1.0:
        raise BadRequest("extras_upscaler_2_visibility", "must be from 0 to 1")
    known = upscaler_names(folders)
    for name in ("upscaler_1", "upscaler_2"):
        if getattr(params, name) not in known:
            raise BadRequest(name, f"unknown upscaler {getattr(params, name)!r}; available: {', '.join(known)}")


def target_size(params: ExtrasParams, width: int, height: int) -> tuple[int, int, float, bool]:
    """(width, height, scale, crop) of the result for a width x height image, as A1111 sizes it: scale
    by a factor, or to a size by the larger of the two ratios, center-cropped to it when crop is on."""
    if params.resize_mode == 1:
        scale = max(params.upscaling_resize_w / width, params.upscaling_resize_h / height)
        if params.upscaling_crop:
            return params.upscaling_resize_w, params.upscaling_resize_h, scale, True
        return max(1, int(width * scale)), max(1, int(height * scale)), scale, False
    scale = params.upscaling_resize
    return max(1, int(width * scale)), max(1, int(height * scale)), scale, False


def infotext(params: ExtrasParams) -> str:
    """A1111's "Postprocess ..." parameters of this upscale."""
    parts = []
    if params.upscaler_1 != "None":
        if params.resize_mode == 1:
            parts.append(f"Postprocess upscale to: {params.upscaling_resize_w}x{params.upscaling_resize_h}")
        else:
            parts.append(f"Postprocess upscale by: {params.upscaling_resize:g}")
        parts.append(f"Postprocess upscaler: {params.upscaler_1}")
        if params.upscaler_2 != "None" and params.extras_upscaler_2_visibility > 0:
            parts.append(f"Postprocess upscaler 2: {params.upscaler_2}")
    return ", ".join(parts)


class _Builder:
    def __init__(self, folders: Folders, max_pixels: int):
        self.folders = folders
        self.max_pixels = max_pixels
        self.workflow: dict[str, dict] = {}
        self.loaders: dict[str, str] = {}  # model file -> loader node id

    def add(self, class_type: str, title: str | None = None, **inputs) -> list:
        node_id = str(len(self.workflow) + 1)
        self.workflow[node_id] = {"class_type": class_type, "inputs": inputs,
                                  **({"_meta": {"title": title}} if title else {})}
        return [node_id, 0]

    def model_scale(self, field_name: str, filename: str) -> int:
        try:
            return upscale_models.load(self.folders.find("upscale_models", filename)).scale
        except (upscale_models.UpscaleModelError, FileNotFoundError) as exc:
            raise BadRequest(field_name, str(exc)) from None

    def upscaled(self, field_name: str, upscaler: str, image: list, size: tuple[int, int],
                 target: tuple[int, int, float, bool]) -> list:
        width, height, scale, crop = target
        crop_method = "center" if crop else "disabled"
        method = BUILTIN_UPSCALERS.get(upscaler)
        if method is not None:
            return self.add("ImageScale", upscaler, image=image, upscale_method=method, width=width, height=height,
                            crop=crop_method)
        filename = model_upscalers(self.folders)[upscaler]
        model_scale = self.model_scale(field_name, filename)
        passes = 1
        while model_scale ** passes < scale and passes < MAX_MODEL_PASSES and model_scale > 1:
            passes += 1
        largest = size[0] * size[1] * model_scale ** (2 * passes)
        if largest > 4 * self.max_pixels:
            raise BadRequest(field_name, f"{upscaler} would make a {largest}-pixel image on the way; this server "
                                         f"allows {4 * self.max_pixels}")
        if filename not in self.loaders:
            self.loaders[filename] = self.add("UpscaleModelLoader", model_name=filename)[0]
        for _ in range(passes):
            image = self.add("ImageUpscaleWithModel", upscaler, upscale_model=[self.loaders[filename], 0], image=image)
        return self.add("ImageScale", image=image, upscale_method="lanczos", width=width, height=height,
                        crop=crop_method)


def build_workflow(params: ExtrasParams, folders: Folders, inputs: list[tuple[str, int, int]], *,
                   save: bool, max_pixels: int, prefix: str = "extras/extras") -> tuple[dict, list[str]]:
    """(workflow, saver node ids in image order) upscaling each (input-folder name, width, height).
    `save` keeps the results in output/ (SaveImage); otherwise they go to temp/ (PreviewImage)."""
    check(params, folders)
    builder = _Builder(folders, max_pixels * OUTPUT_PIXELS_PER_REQUEST_PIXEL)
    savers = []
    for index, (name, width, height) in enumerate(inputs):
        image = builder.add("LoadImage", image=name)
        if params.upscaler_1 != "None":  # A1111: no first upscaler, no upscale at all
            target = target_size(params, width, height)
            if target[0] * target[1] > builder.max_pixels:
                raise BadRequest("upscaling_resize", f"image {index + 1} would be {target[0]}x{target[1]}, more "
                                                     f"than this server allows ({builder.max_pixels} pixels)")
            first = builder.upscaled("upscaler_1", params.upscaler_1, image, (width, height), target)
            if params.upscaler_2 != "None" and params.extras_upscaler_2_visibility > 0:
                second = builder.upscaled("upscaler_2", params.upscaler_2, image, (width, height), target)
                first = builder.add("ImageBlend", image1=first, image2=second,
                                    blend_factor=params.extras_upscaler_2_visibility, blend_mode="normal")
            image = first
        if save:
            savers.append(builder.add("SaveImage", images=image, filename_prefix=prefix)[0])
        else:
            savers.append(builder.add("PreviewImage", images=image)[0])
    return builder.workflow, savers


def store_inputs(folders: Folders, images: list[Image.Image]) -> list[tuple[str, int, int]]:
    """Each image written to the input folder (under extras/), as (name, width, height)."""
    return [(store_input_image(folders, image, prefix="extras/in"), image.width, image.height) for image in images]


def html_info(text: str) -> str:
    """A1111's html_info: the infotext as a paragraph."""
    return f"<p>{html.escape(text)}</p>" if text else ""


def source_parameters(image: Image.Image) -> str | None:
    """The A1111 infotext a source image carries, which its upscaled copy keeps."""
    parameters = image.info.get("parameters")
    return parameters if isinstance(parameters, str) and parameters else None


def write_text_chunks(path: Path, parameters: str | None, info: str) -> None:
    """Give a saved result A1111's text chunks of an Extras image: the source's "parameters" and the
    upscale's own infotext as "extras"; the chunks it has (the workflow) stay."""
    texts = read_png_text(path)
    if parameters:
        texts["parameters"] = parameters
    if info:
        texts["extras"] = info
    pnginfo = PngInfo()
    for key, value in texts.items():
        pnginfo.add_text(key, value)
    encoded = io.BytesIO()
    with Image.open(path) as image:
        image.save(encoded, format="PNG", pnginfo=pnginfo, compress_level=4)
    write_atomically(path, encoded.getvalue())
