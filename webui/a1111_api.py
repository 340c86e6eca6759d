"""AUTOMATIC1111's HTTP API (/sdapi/v1/*) over the shared job queue.

Requests become GenerationParams (webui/parameters.py, whose field types the request models share, so
a request is checked as the tabs' forms are) and then workflows (webui/generation.py), one queued job
per batch count; the images returned are the saved PNG files, so they carry A1111's infotext. Hires fix, the
refiner and the VAE choice (override_settings / options "sd_vae") are added to the workflows by
generation_passes.py. `script_name: "x/y/z plot"` with A1111's script_args runs webui/xyz_plot.py. Fields
A1111 accepts but this server can't honour (face restoration, tiling, other scripts) are
refused with 422 when switched on rather than silently ignored; the
always-on scripts of extensions it doesn't have, unknown prompt styles and prompt LoRAs not in the folder
are left out with a warning in the response's info ("warnings"); other unknown fields are ignored, as A1111
does. A request's `styles` (webui/prompt_styles.py) are applied to its prompts, which the infotext and the
response then report, as A1111's do. The listings clients probe (/loras, /prompt-styles,
/face-restorers, ...) answer with what this server has, which may be nothing.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import struct
import threading
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from ..nodes.folders import write_atomically
from ..nodes.formats import file_hashes, lora_hash, png_metadata
from ..nodes.runtime import embeddings
from ..nodes.formats.sampler_names import (
    A1111_SAMPLER_ALIASES,
    A1111_SAMPLERS,
    A1111_SCHEDULES,
)
from . import a1111_controlnet, generation, model_match, parameters, prompt_styles, xyz_plot
from .context import ServerContext
from .generation import BadRequest, Plan
from .parameters import (
    AUTOMATIC_VAE,
    NO_REFINER,
    BatchCount,
    BatchSize,
    CfgScale,
    GenerationParams,
    MaskBlur,
    MaskedContent,
    Padding,
    ResizeMode,
    Seed,
    Size,
    Steps,
    Strength,
)
from .jobs import InvalidWorkflow
from .json_errors import Refused

log = logging.getLogger(__name__)
MAX_INPUT_PIXELS = 4096 * 4096  # an init image or mask larger than this is refused before decoding
OPTIONS_FILE = "options.json"

# A1111 request fields as GenerationParams names them, for error messages in A1111's terms.
_FIELD_NAMES = {"checkpoint": "override_settings.sd_model_checkpoint", "init_image": "init_images",
                "clip_skip": "override_settings.CLIP_stop_at_last_layers", "vae": "override_settings.sd_vae",
                "randn_source": "override_settings.randn_source",
                "eta_noise_seed_delta": "override_settings.eta_noise_seed_delta"}
# A1111 settings that are generation fields of the same name: (the request's override_settings, else the
# saved /options value, else this default)
SEED_SETTINGS = {"randn_source": "GPU", "eta_noise_seed_delta": 0}
REFINER_SWITCH_AT = 0.8  # A1111's UI default, for a request with a refiner and no switch point
HIRES_DENOISE = 0.7  # A1111's UI default, for a hires fix request without a denoising strength
# infotext keys A1111 reports as extra_generation_params
EXTRA_PARAMS = ("Hires ", "Refiner", "Lora hashes", "TI hashes")


# -- request bodies ---------------------------------------------------------------------------------------

class _Request(BaseModel):
    """The fields txt2img and img2img share, under A1111's names and with A1111's API defaults; the
    types (and so the bounds) are GenerationParams' (webui/parameters.py)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: Seed = -1
    subseed: Seed = -1
    subseed_strength: Strength = 0.0
    seed_resize_from_w: int = -1  # A1111's API default; 0 or less: the image's own size
    seed_resize_from_h: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"  # A1111's legacy field, used when sampler_name is absent
    scheduler: str | None = None
    batch_size: BatchSize = 1
    n_iter: BatchCount = 1
    steps: Steps = 50  # the tabs' default is 20
    cfg_scale: CfgScale = 7.0
    width: Size = 512
    height: Size = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    override_settings: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] | None = None
    alwayson_scripts: dict[str, Any] | None = None
    send_images: bool = True
    save_images: bool = False  # the tabs save
    refiner_checkpoint: str | None = None
    refiner_switch_at: Strength | None = None  # None: REFINER_SWITCH_AT


class Txt2ImgRequest(_Request):
    denoising_strength: Strength | None = None  # only used by hires fix in A1111; None: HIRES_DENOISE
    enable_hr: bool = False
    # Hires fix's settings are checked (as GenerationParams' fields) only with enable_hr, as A1111
    # ignores them otherwise.
    hr_scale: float = 2.0
    hr_upscaler: str | None = None  # None: "Latent"
    hr_second_pass_steps: float = 0
    hr_resize_x: float = 0
    hr_resize_y: float = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgRequest(_Request):
    init_images: list[str] | None = None
    resize_mode: ResizeMode = 0
    denoising_strength: Strength | None = 0.75  # null: A1111's default
    mask: str | None = None
    mask_blur: MaskBlur | None = None  # None: mask_blur_x (which must equal mask_blur_y)
    mask_blur_x: MaskBlur = 4
    mask_blur_y: MaskBlur = 4
    mask_round: bool = True
    inpainting_fill: MaskedContent = 0  # A1111's API default "fill"; its UI's (and the tabs') is "original"
    inpaint_full_res: bool = True  # A1111's API default ("only masked"), unlike its UI
    inpaint_full_res_padding: Padding = 0  # the tabs' default is 32
    inpainting_mask_invert: int = 0  # A1111's 0/1
    include_init_images: bool = False


# The request fields passed on to GenerationParams as they are.
_SAME_FIELDS = ("prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "scheduler", "batch_size",
                "n_iter", "steps", "cfg_scale", "width", "height", "save_images")
_HIRES_FIELDS = ("hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_sampler_name",
                 "hr_scheduler", "hr_prompt", "hr_negative_prompt")
_INPAINT_FIELDS = ("resize_mode", "mask_round", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding")


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image: str = ""


# -- helpers ----------------------------------------------------------------------------------------------

class _A1111Route(APIRoute):
    """A request body that fails its model's checks gets the same error body as the other refusals."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def checked(request):
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return bad_request(parameters.bad_request(exc.errors()))
        return checked


def bad_request(exc: BadRequest, status: int = 422) -> JSONResponse:
    """A1111's answer to parameters it can't generate, naming the field in the request's own terms."""
    field_name = _FIELD_NAMES.get(exc.field, exc.field)
    message = f"{field_name}: {exc.message}"
    return Refused(status, message, a1111="BadRequest", field=field_name, errors=message).response()


def decode_base64_image(field_name: str, data: Any, max_bytes: int) -> Image.Image:
    """A base64 image (with or without a data: URL prefix), decoded and checked; BadRequest otherwise."""
    return open_image_bytes(field_name, decode_base64(field_name, data, max_bytes))


def decode_base64(field_name: str, data: Any, max_bytes: int) -> bytes:
    if not isinstance(data, str) or not data.strip():
        raise BadRequest(field_name, "expected a base64-encoded image")
    data = data.strip()
    if data.startswith(("http://", "https://")):
        raise BadRequest(field_name, "image URLs are not fetched; send the image as base64")
    if data.startswith("data:"):
        header, sep, data = data.partition(",")
        if not sep or ";base64" not in header:
            raise BadRequest(field_name, "a data: URL must be base64 (data:image/png;base64,...)")
    data = re.sub(r"\s+", "", data)
    if len(data) * 3 // 4 > max_bytes:
        raise BadRequest(field_name, f"image is over the upload limit of {max_bytes} bytes")
    padded = data + "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(field_name, "not valid base64") from None
    return raw


def open_image_bytes(field_name: str, raw: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise BadRequest(field_name, f"image is {image.width}x{image.height}, over {MAX_INPUT_PIXELS} pixels")
        image.load()
    except BadRequest:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as exc:
        raise BadRequest(field_name, f"not a readable image ({type(exc).__name__})") from None
    return image


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _exif_infotext(image: Image.Image) -> str | None:
    """A1111's infotext in a JPEG/WebP: EXIF UserComment, "UNICODE" (UTF-16) or "ASCII" coded."""
    try:
        comment = image.getexif().get_ifd(0x8769).get(0x9286)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError, struct.error):  # broken EXIF: no infotext
        return None
    if isinstance(comment, str):
        return comment
    if not isinstance(comment, bytes) or len(comment) < 8:
        return None
    code, body = comment[:8], comment[8:]
    if code.startswith(b"UNICODE"):
        for encoding in ("utf-16-be", "utf-16-le"):
            try:
                return body.decode(encoding)
            except UnicodeDecodeError:
                continue
    return body.decode("latin-1").rstrip("\x00") if code.startswith(b"ASCII") else None


def _refuse_unsupported(req: _Request) -> None:
    unsupported = {
        "restore_faces": "face restoration is not supported",
        "tiling": "tiling is not supported",
    }
    for name, message in unsupported.items():
        if getattr(req, name, None):
            raise BadRequest(name, message)
    if req.script_name and req.script_name.strip().lower() != xyz_plot.SCRIPT_NAME:
        raise BadRequest("script_name", f"script {req.script_name!r} is not available; "
                                        f"available: {xyz_plot.SCRIPT_NAME!r}")


def ignored_settings(req: _Request, scripts: dict) -> list[str]:
    """Warnings for what a request asks that this server leaves out and still generates without: the
    always-on `scripts` of extensions it doesn't have (A1111 without the extension would refuse the
    request; a client is better served by the image and the warning)."""
    warnings = [f"alwayson_scripts: {name!r} is not available here; ignored"
                for name, value in scripts.items() if value not in (None, {}, [])]
    for warning in warnings:
        log.warning("A1111 request: %s", warning)
    return warnings


@dataclass
class _Running:
    """A1111 request a queued job belongs to, for /progress and /interrupt."""
    index: int
    jobs: list[str]
    skipped: set = field(default_factory=set)


class A1111Api:
    def __init__(self, ctx: ServerContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._interrupted: set[str] = set()

    # -- checkpoints and options ------------------------------------------------------------------------
    def checkpoints(self) -> list[str]:
        return self.ctx.folders.list("checkpoints")

    def model_hash(self, name: str, wait: bool = False) -> tuple[str | None, str | None]:
        """(A1111 short hash, sha256) of a checkpoint, or Nones where not known yet: listings hash small
        files on the spot and leave big ones to the background hasher (file_hashes); `wait` hashes now."""
        path = self._path(name)
        if path is None:
            return None, None
        hasher = file_hashes.current()
        try:
            short = hasher.wait_for(path) if wait else hasher.for_listing(path)
            return short, hasher.known(path) if short else None
        except (OSError, ValueError):
            return None, None

    def title(self, name: str) -> str:
        short, _ = self.model_hash(name)
        return f"{name} [{short}]" if short else name

    def find_checkpoint(self, value: Any, field_name: str) -> str:
        """A checkpoint named as A1111 names them: file name, title "name [hash]", name without extension,
        or a hash (model_match: the hash first, so a renamed file is found)."""
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(field_name, f"expected a checkpoint name, got {value!r}")
        found = model_match.find_checkpoint(self.ctx.folders, value)
        if found.name is None:
            names = self.checkpoints()
            raise BadRequest(field_name, f"unknown checkpoint {value!r}; available: {', '.join(names) or 'none'}")
        return found.name

    def _path(self, name: str) -> Path | None:
        try:
            return self.ctx.folders.find("checkpoints", name)
        except (OSError, ValueError):
            return None

    def load_options(self) -> dict:
        try:
            options = json.loads((self.ctx.data_dir / OPTIONS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return options if isinstance(options, dict) else {}

    def save_options(self, options: dict) -> None:
        write_atomically(self.ctx.data_dir / OPTIONS_FILE, json.dumps(options, indent=2).encode())

    def default_checkpoint(self) -> str:
        names = self.checkpoints()
        chosen = self.load_options().get("sd_model_checkpoint")
        for candidate in (chosen, parameters.DEFAULT_CHECKPOINT):
            if candidate in names:
                return candidate
        if not names:
            raise BadRequest("checkpoint", "no checkpoint in the checkpoints folder")
        return names[0]

    def clip_skip(self, value: Any = None) -> int:
        value = self.load_options().get("CLIP_stop_at_last_layers", 1) if value is None else value
        return GenerationParams(clip_skip=value).clip_skip  # checked as the tabs' clip skip

    def find_vae(self, value: Any, field_name: str = "vae") -> str | None:
        """A VAE file as A1111 names it (file name, or without its extension); None for "Automatic" or
        "None" (the checkpoint's own VAE)."""
        if value is None or value in AUTOMATIC_VAE:
            return None
        names = self.ctx.folders.list("vae")
        for name in names:
            if value in (name, os.path.splitext(name)[0]):
                return name
        raise BadRequest(field_name, f"unknown VAE {value!r}; available: Automatic, None, {', '.join(names)}")

    def vae(self, override: Any = None) -> str | None:
        """The VAE of a request: its override_settings' sd_vae, else the saved option."""
        if override is not None:
            return self.find_vae(override)
        try:
            return self.find_vae(self.load_options().get("sd_vae"))
        except BadRequest:
            return None  # the chosen file has gone: the checkpoint's own, as A1111 falls back

    def set_options(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise BadRequest("options", "expected a JSON object of settings")
        with self._lock:
            options = self.load_options()
            if "sd_model_checkpoint" in body:
                options["sd_model_checkpoint"] = self.find_checkpoint(body["sd_model_checkpoint"],
                                                                      "sd_model_checkpoint")
            if "CLIP_stop_at_last_layers" in body:
                try:
                    options["CLIP_stop_at_last_layers"] = self.clip_skip(body["CLIP_stop_at_last_layers"])
                except BadRequest as exc:
                    raise BadRequest("CLIP_stop_at_last_layers", exc.message) from None
            if "sd_vae" in body:
                options["sd_vae"] = self.find_vae(body["sd_vae"], "sd_vae") or "Automatic"
            for name in SEED_SETTINGS.keys() & body.keys():
                try:
                    options[name] = getattr(GenerationParams(**{name: body[name]}), name)
                except BadRequest as exc:
                    raise BadRequest(name, exc.message) from None
            self.save_options(options)

    def options(self) -> dict:
        checkpoint = None
        try:
            checkpoint = self.default_checkpoint()
        except BadRequest:
            pass
        short, sha256 = self.model_hash(checkpoint) if checkpoint else (None, None)
        return {"sd_model_checkpoint": f"{checkpoint} [{short}]" if checkpoint and short else checkpoint,
                "sd_checkpoint_hash": sha256, "CLIP_stop_at_last_layers": self.clip_skip(),
                "sd_vae": self.vae() or "Automatic", "samples_format": "png", "enable_pnginfo": True,
                **self.seed_settings({})}

    def seed_settings(self, overrides: dict) -> dict:
        """SEED_SETTINGS' values for a request (unchecked: GenerationParams checks them)."""
        saved = self.load_options()
        return {name: overrides.get(name, saved.get(name, default)) for name, default in SEED_SETTINGS.items()}

    # -- requests -> params --------------------------------------------------------------------------
    def common_params(self, req: _Request, **values: Any) -> GenerationParams:
        """GenerationParams of a request: its shared fields, the settings it overrides (or the saved
        options) and `values` (the route's own fields)."""
        _refuse_unsupported(req)
        overrides = req.override_settings or {}
        if "sd_model_checkpoint" in overrides:
            checkpoint = self.find_checkpoint(overrides["sd_model_checkpoint"], "checkpoint")
        else:
            checkpoint = self.default_checkpoint()
        same = {name: getattr(req, name) for name in _SAME_FIELDS}
        same.update({name: max(0, getattr(req, name)) for name in ("seed_resize_from_w", "seed_resize_from_h")})
        same.update(self.styled_prompts(req))
        return GenerationParams(
            **same, checkpoint=checkpoint,
            sampler_name=req.sampler_name or req.sampler_index or "Euler",
            clip_skip=self.clip_skip(overrides.get("CLIP_stop_at_last_layers")),
            vae=self.vae(overrides.get("sd_vae")), refiner_checkpoint=self.refiner(req.refiner_checkpoint),
            refiner_switch_at=REFINER_SWITCH_AT if req.refiner_switch_at is None else req.refiner_switch_at,
            **self.seed_settings(overrides), **values)

    def styled_prompts(self, req: _Request) -> dict[str, str]:
        """The request's prompts with its `styles` applied (the hires-fix prompts too, when given);
        unknown style names are warned about and left out, as A1111 does."""
        if not req.styles:
            return {}
        try:
            styles = prompt_styles.library(self.ctx.data_dir, self.ctx.folders.install_dirs)
            prompt, negative, _ = styles.apply(req.prompt, req.negative_prompt, req.styles)
            hr_prompt, hr_negative, _ = styles.apply(req.hr_prompt, req.hr_negative_prompt, req.styles)
        except prompt_styles.StylesError as exc:
            raise BadRequest("styles", str(exc)) from None
        styled = {"prompt": prompt, "negative_prompt": negative}
        if req.hr_prompt:
            styled["hr_prompt"] = hr_prompt
        if req.hr_negative_prompt:
            styled["hr_negative_prompt"] = hr_negative
        return styled

    def style_warnings(self, req: _Request) -> list[str]:
        if not req.styles:
            return []
        known = prompt_styles.library(self.ctx.data_dir, self.ctx.folders.install_dirs).styles()
        return [f"styles: no style named {name!r}; ignored" for name in req.styles if name not in known]

    def refiner(self, value: Any) -> str | None:
        if value is None or value in NO_REFINER:
            return None
        return self.find_checkpoint(value, "refiner_checkpoint")

    def with_extensions(self, plan: Plan, req: _Request) -> Plan:
        """The ControlNet extension's units wired into the plan's workflows; warnings for the rest."""
        units, others = a1111_controlnet.controlnet_args(req.alwayson_scripts)
        plan.warnings += a1111_controlnet.apply_to_plan(plan, units, self.ctx.folders, self.ctx.max_upload_bytes)
        plan.warnings += ignored_settings(req, others) + self.style_warnings(req)
        return plan

    def plot_settings(self, req: _Request) -> xyz_plot.XyzSettings:
        """The X/Y/Z plot's script_args; ControlNet units are wired by template node ids, which the
        plot's merged workflow doesn't keep, so they are refused with it."""
        units, _ = a1111_controlnet.controlnet_args(req.alwayson_scripts)
        if a1111_controlnet.parse_units(units, self.ctx.folders, self.ctx.max_upload_bytes):
            raise BadRequest("alwayson_scripts.controlnet", "ControlNet units can't be combined with the X/Y/Z plot")
        return xyz_plot.XyzSettings.from_script_args(req.script_args or [])

    def txt2img_plan(self, req: Txt2ImgRequest) -> Plan:
        hires = {}
        if req.enable_hr:
            hires = {name: getattr(req, name) for name in _HIRES_FIELDS}
            hires.update(enable_hr=True, hr_upscaler=req.hr_upscaler or "Latent",
                         denoising_strength=HIRES_DENOISE if req.denoising_strength is None else req.denoising_strength)
        params = self.common_params(req, **hires)
        if req.script_name:
            plan = xyz_plot.build_plot("txt2img", params, self.plot_settings(req), self.ctx.folders,
                                       self.ctx.max_pixels)
        else:
            plan = generation.build_txt2img(params, self.ctx.folders, self.ctx.max_pixels)
        return self.with_extensions(plan, req)

    def img2img_plan(self, req: Img2ImgRequest) -> Plan:
        if not req.init_images:
            raise BadRequest("init_images", "img2img needs one init image")
        if len(req.init_images) > 1:
            raise BadRequest("init_images", "only one init image per request is supported")
        blur = req.mask_blur
        if blur is None:
            if req.mask_blur_x != req.mask_blur_y:
                raise BadRequest("mask_blur_x", "different horizontal and vertical mask blur is not supported")
            blur = req.mask_blur_x
        limit = self.ctx.max_upload_bytes
        params = self.common_params(
            req, **{name: getattr(req, name) for name in _INPAINT_FIELDS},
            init_image=decode_base64_image("init_images", req.init_images[0], limit),
            mask=decode_base64_image("mask", req.mask, limit) if req.mask else None,
            denoising_strength=0.75 if req.denoising_strength is None else req.denoising_strength,
            mask_blur=blur, inpainting_mask_invert=bool(req.inpainting_mask_invert))
        if req.script_name:
            plan = xyz_plot.build_plot("img2img", params, self.plot_settings(req), self.ctx.folders,
                                       self.ctx.max_pixels, prefix="a1111/img2img")
        else:
            plan = generation.build_img2img(params, self.ctx.folders, self.ctx.max_pixels, prefix="a1111/img2img")
        return self.with_extensions(plan, req)

    # -- running -------------------------------------------------------------------------------------
    async def generate(self, plan: Plan, req: _Request, echo: dict) -> JSONResponse | dict:
        queue = self.ctx.queue
        jobs = []
        try:
            for workflow in plan.workflows:
                jobs.append(queue.submit(workflow, extra={"source": "a1111"}))
        except InvalidWorkflow as exc:  # generation builds valid graphs; a model file may have gone
            for job in jobs:
                queue.cancel(job.id)
            return Refused(422, "", a1111="InvalidWorkflow", detail=exc.response()).response()
        ids = [job.id for job in jobs]
        running = {job_id: _Running(index, ids) for index, job_id in enumerate(ids)}
        with self._lock:
            self._running.update(running)
        paths: list[Path] = []
        try:
            for index, job_id in enumerate(ids):
                done = await run_in_threadpool(queue.wait, job_id)
                if done.outputs:
                    paths += await run_in_threadpool(plan.finish, self.ctx.folders, index, done.outputs)
                if done.status == "error":
                    for rest in ids[index + 1:]:
                        queue.cancel(rest)
                    message = (done.error or {}).get("exception_message", "generation failed")
                    return Refused(500, message, a1111="GenerationFailed").response()
                if done.status in ("interrupted", "cancelled") and job_id not in running[job_id].skipped:
                    for rest in ids[index + 1:]:
                        queue.cancel(rest)
                    break
        finally:
            with self._lock:
                for job_id in ids:
                    self._running.pop(job_id, None)
                    self._interrupted.discard(job_id)
            # Nothing kept means the inputs aren't kept either (once no job of this request needs them).
            if not plan.params.save_images and plan.inputs is not None and all(
                    (job := queue.get(job_id)) is None or job.done for job_id in ids):
                for name in plan.inputs.stored:
                    (self.ctx.folders.input_dir / name).unlink(missing_ok=True)
        return await run_in_threadpool(self.response, plan, req, echo, paths)

    def response(self, plan: Plan, req: _Request, echo: dict, paths: list[Path]) -> dict:
        params = plan.params
        images, infotexts = [], []
        for path in paths:
            data = path.read_bytes()
            infotexts.append(png_metadata.read_png_text(data).get("parameters", ""))
            if req.send_images:
                images.append(base64.b64encode(data).decode("ascii"))
        count = len(plan.all_seeds)
        plot = isinstance(plan, xyz_plot.XyzPlan)
        prompts = plan.image_prompts() if plot else [params.prompt] * count
        negatives = plan.image_prompts("negative_prompt") if plot else [params.negative_prompt] * count
        sampler, _ = png_metadata.a1111_names(params.sampler_name, params.scheduler)
        parsed = png_metadata.parse_infotext(infotexts[0], defaults=False) if infotexts else {}
        info = {
            "prompt": params.prompt, "all_prompts": prompts,
            "negative_prompt": params.negative_prompt, "all_negative_prompts": negatives,
            "seed": params.seed, "all_seeds": plan.all_seeds, "subseed": params.subseed,
            # A1111: one variation seed for every image, or (unused) subseed + i when the strength is 0
            "all_subseeds": [params.subseed + (0 if params.subseed_strength else i) for i in range(count)],
            "subseed_strength": params.subseed_strength, "width": params.width,
            "height": params.height, "sampler_name": sampler, "cfg_scale": params.cfg_scale, "steps": params.steps,
            "batch_size": params.batch_size, "restore_faces": False, "face_restoration_model": None,
            "sd_model_name": os.path.splitext(os.path.basename(params.checkpoint))[0],
            "sd_model_hash": self.model_hash(params.checkpoint, wait=True)[0],
            "sd_vae_name": parsed.get("VAE"), "sd_vae_hash": parsed.get("VAE hash"),
            "seed_resize_from_w": params.seed_resize_from_w or -1, "seed_resize_from_h": params.seed_resize_from_h or -1,
            "denoising_strength": params.denoising_strength if plan.inputs is not None or params.enable_hr
            else echo.get("denoising_strength"),
            "extra_generation_params": {**(plan.inputs.overlay.infotext if plan.inputs and plan.inputs.overlay
                                           else {}),
                                        **{k: v for k, v in parsed.items() if k.startswith(EXTRA_PARAMS)}},
            "index_of_first_image": 1 if plot else 0, "infotexts": infotexts, "styles": req.styles or [],
            "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": params.clip_skip,
            "is_using_inpainting_conditioning": False, "version": png_metadata.inkwash_version(),
            "warnings": plan.warnings,  # what was left out (not in A1111's info: its console shows them)
        }
        return {"images": images, "parameters": echo, "info": json.dumps(info)}

    # -- progress and control ------------------------------------------------------------------------
    def progress(self, skip_current_image: bool) -> dict:
        snapshot = self.ctx.queue.progress
        job_id = snapshot.job_id
        with self._lock:
            running = self._running.get(job_id) if job_id else None
            interrupted = job_id in self._interrupted
        index, count = (running.index, len(running.jobs)) if running else (0, 1)
        fraction = snapshot.value / snapshot.max if snapshot.max else 0.0
        progress = (index + fraction) / count if job_id else 0.0
        elapsed = time.time() - snapshot.started if job_id and snapshot.started else 0.0
        eta = elapsed / progress - elapsed if progress > 0 else 0.0
        preview = snapshot.preview if job_id and not skip_current_image else None
        return {
            "progress": round(progress, 4), "eta_relative": round(eta, 2),
            "state": {"skipped": False, "interrupted": interrupted, "stopping_generation": False,
                      "job": f"task({job_id})" if job_id else "", "job_count": self.ctx.queue.remaining(),
                      "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(snapshot.started))
                      if snapshot.started else "0",
                      "job_no": index, "sampling_step": snapshot.value, "sampling_steps": snapshot.max},
            "current_image": _png_base64(preview) if isinstance(preview, Image.Image) else None,
            "textinfo": None,
            "current_task": f"task({job_id})" if job_id else None,
        }

    def interrupt(self, skip: bool = False) -> None:
        """A1111's interrupt stops the whole request; skip only the current batch."""
        job_id = self.ctx.queue.progress.job_id
        if job_id is None:
            return
        with self._lock:
            running = self._running.get(job_id)
            if skip and running is not None:
                running.skipped.add(job_id)
            self._interrupted.add(job_id)
            rest = running.jobs[running.index + 1:] if running and not skip else []
        for later in rest:
            self.ctx.queue.cancel(later)
        self.ctx.queue.interrupt(job_id)

    # -- what clients probe ----------------------------------------------------------------------------
    def loras(self) -> list[dict]:
        """The loras folder as A1111's Lora extension lists it: the name a prompt tag uses, the
        alias its training metadata gives (ss_output_name), the file and that metadata."""
        listed = []
        for name in self.ctx.folders.list("loras"):
            path = self.ctx.folders.find("loras", name)
            found = lora_hash.metadata(path)
            stem = os.path.splitext(os.path.basename(name))[0]
            listed.append({"name": stem, "alias": found.get("ss_output_name") or stem, "path": str(path),
                           "metadata": found})
        return listed

    def hypernetworks(self) -> list[dict]:
        folders = self.ctx.folders
        return [{"name": os.path.splitext(os.path.basename(name))[0], "path": str(folders.find("hypernetworks", name))}
                for name in folders.list("hypernetworks")]

    def cmd_flags(self) -> dict:
        """A1111's command-line flags that describe this server: its folders and that the API is on.
        Nothing about logins or certificates (A1111 would list its --api-auth password here)."""
        folders = self.ctx.folders

        def first(kind: str) -> str | None:
            dirs = folders.model_dirs(kind)
            return str(dirs[0]) if dirs else None

        return {"api": True, "nowebui": False, "data_dir": str(self.ctx.data_dir),
                "models_dir": str(folders.models_dir), "ckpt_dir": first("checkpoints"), "vae_dir": first("vae"),
                "lora_dir": first("loras"), "embeddings_dir": first("embeddings"),
                "hypernetwork_dir": first("hypernetworks"), "controlnet_dir": first("controlnet")}

    def png_info(self, req: PngInfoRequest) -> dict:
        if not req.image.strip():
            return {"info": "", "items": {}, "parameters": {}}
        raw = decode_base64("image", req.image, self.ctx.max_upload_bytes)
        image = open_image_bytes("image", raw)  # refuses what isn't an image
        # PNG text chunks read directly: PIL stops at text chunks over 1 MB (large workflows)
        try:
            texts = png_metadata.read_png_text(raw) or {k: v for k, v in image.info.items() if isinstance(v, str)}
        except png_metadata.PngTextTooLarge as exc:
            raise BadRequest("image", str(exc)) from None
        info = texts.pop("parameters", None) or _exif_infotext(image) or ""
        return {"info": info, "items": texts, "parameters": png_metadata.parse_infotext(info) if info else {}}


def _memory() -> dict:
    """A1111's /memory: this process's RAM, and CUDA's memory when there is a GPU."""
    import psutil
    import torch

    process = psutil.Process(os.getpid())
    used = process.memory_info().rss
    total = psutil.virtual_memory().total
    ram = {"free": total - used, "used": used, "total": total}
    if not torch.cuda.is_available():
        return {"ram": ram, "cuda": {"error": "unavailable"}}
    free, gpu_total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(key: str) -> dict:
        return {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}

    cuda = {"system": {"free": free, "used": gpu_total - free, "total": gpu_total},
            "active": pair("active_bytes"), "allocated": pair("allocated_bytes"), "reserved": pair("reserved_bytes"),
            "inactive": pair("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}
    return {"ram": ram, "cuda": cuda}


def _sampler_list() -> list[dict]:
    return [{"name": name, "aliases": [a for a, n in A1111_SAMPLER_ALIASES.items() if n == name] + [comfy],
             "options": {"scheduler": automatic}} for name, (comfy, automatic) in A1111_SAMPLERS.items()]


def _scheduler_list() -> list[dict]:
    return [{"name": label.lower().replace(" ", "_"), "label": label, "aliases": None, "default_rho": -1,
             "need_inner_model": False, "comfy_name": comfy} for label, comfy in A1111_SCHEDULES.items()]


# -- routes -----------------------------------------------------------------------------------------------

def router(ctx: ServerContext) -> APIRouter:
    api = A1111Api(ctx)
    routes = APIRouter(prefix="/sdapi/v1", tags=["A1111"], route_class=_A1111Route)

    @routes.post("/txt2img")
    async def txt2img(req: Txt2ImgRequest):
        try:
            plan = await run_in_threadpool(api.txt2img_plan, req)
        except BadRequest as exc:
            return bad_request(exc)
        return await api.generate(plan, req, req.model_dump())

    @routes.post("/img2img")
    async def img2img(req: Img2ImgRequest):
        try:
            plan = await run_in_threadpool(api.img2img_plan, req)
        except BadRequest as exc:
            return bad_request(exc)
        echo = req.model_dump()
        if not req.include_init_images:  # as A1111: don't send the (large) inputs back
            echo["init_images"], echo["mask"] = None, None
        return await api.generate(plan, req, echo)

    @routes.get("/progress")
    def progress(skip_current_image: bool = False):
        return api.progress(skip_current_image)

    @routes.post("/interrupt")
    def interrupt():
        api.interrupt()
        return {}

    @routes.post("/skip")
    def skip():
        api.interrupt(skip=True)
        return {}

    @routes.post("/png-info")
    def png_info(req: PngInfoRequest):
        try:
            return api.png_info(req)
        except BadRequest as exc:
            return bad_request(exc)

    @routes.get("/options")
    def get_options():
        return api.options()

    @routes.post("/options")
    def set_options(body: dict[str, Any]):
        try:
            api.set_options(body)
        except BadRequest as exc:
            return bad_request(exc)
        return None

    @routes.get("/sd-models")
    def sd_models():
        models = []
        for name in api.checkpoints():
            short, sha256 = api.model_hash(name)
            path = api._path(name)
            models.append({"title": f"{name} [{short}]" if short else name,
                           "model_name": os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0],
                           "hash": short, "sha256": sha256, "filename": str(path) if path else name, "config": None})
        return models

    @routes.post("/refresh-checkpoints")
    def refresh_checkpoints():
        file_hashes.current().enqueue_folders(api.ctx.folders)  # new files get hashed in the background
        return None  # the folder is read on every request

    @routes.post("/refresh-vae")
    def refresh_vae():
        return None  # the folder is read on every request

    @routes.post("/refresh-loras")
    def refresh_loras():
        file_hashes.current().enqueue_folders(api.ctx.folders)
        return None  # the folder is read on every request

    @routes.get("/loras")
    def loras():
        return api.loras()

    @routes.get("/hypernetworks")
    def hypernetworks():
        return api.hypernetworks()

    @routes.get("/prompt-styles")
    def list_prompt_styles():
        try:
            styles = prompt_styles.library(ctx.data_dir, ctx.folders.install_dirs).styles()
        except prompt_styles.StylesError as exc:
            return bad_request(BadRequest("styles", str(exc)), status=500)
        return [asdict(style) for style in styles.values()]

    @routes.get("/face-restorers")
    def face_restorers():
        return []  # no face restoration here

    @routes.get("/realesrgan-models")
    def realesrgan_models():
        return []  # hires fix's upscalers are /upscalers; no RealESRGAN models

    @routes.get("/scripts")
    def scripts():
        return {"txt2img": [xyz_plot.SCRIPT_NAME], "img2img": [xyz_plot.SCRIPT_NAME]}

    @routes.get("/script-info")
    def script_info():
        return [xyz_plot.script_info(mode) for mode in ("txt2img", "img2img")]

    @routes.get("/extensions")
    def extensions():
        return []

    @routes.get("/cmd-flags")
    def cmd_flags():
        return api.cmd_flags()

    @routes.get("/memory")
    def memory():
        return _memory()

    @routes.get("/embeddings")
    def embedding_list():
        return embeddings.a1111_listing(ctx.folders)

    @routes.get("/sd-vae")
    def sd_vae():
        return [{"model_name": name, "filename": name} for name in ctx.folders.list("vae")]

    # /upscalers (the built-in pixel upscalers and the model files) is webui/a1111_extras.py's

    @routes.get("/latent-upscale-modes")
    def latent_upscale_modes():
        return [{"name": n} for n, (space, _) in png_metadata.HIRES_UPSCALERS.items() if space == "latent"]

    @routes.get("/samplers")
    def samplers():
        return _sampler_list()

    @routes.get("/schedulers")
    def schedulers():
        return _scheduler_list()

    return routes
