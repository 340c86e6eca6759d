"""The generation parameter set, declared once: each field's type, default, bounds and choices.

GenerationParams is what the tabs and the A1111 API hand to webui/generation.py. Its field types
(Steps, Size, CfgScale, ...) carry the bounds, so the A1111 request models (webui/a1111_api.py) reuse
them under A1111's names and defaults, the tabs read their sliders' ranges from them (`slider`), and
one conversion (`bad_request`) turns pydantic's errors into a BadRequest naming the field.

Building a GenerationParams checks every field on its own (NaN and infinities included); `resolve`
does what needs the whole request or the model folders: A1111 sampler names, the random seed, the
pixel limit, the checkpoint, VAE, refiner and LoRA files, hires fix's size.
"""
from __future__ import annotations

import math
import os
import random
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from ..nodes.folders import Folders
from ..nodes.folders import current as current_folders
from ..nodes.formats.png_metadata import HIRES_UPSCALERS
from ..nodes.formats.sampler_names import (
    A1111_SAMPLER_ALIASES,
    A1111_SAMPLERS,
    A1111_SCHEDULES,
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    from_a1111,
)
from . import prompt_loras
from .bad_request import BadRequest

DEFAULT_CHECKPOINT = "inkwash-demo.safetensors"
MIN_SIZE, MAX_SIZE = 64, 2048
MAX_BATCH_SIZE = 64
MAX_BATCH_COUNT = 100
MAX_STEPS = 1000
MAX_CLIP_SKIP = 12
MAX_SEED = 2 ** 64 - 1  # KSampler's seed widget
RANDOM_SEEDS = 4294967294  # A1111's get_fixed_seed draws below this
DEFAULT_MAX_PIXELS = 2048 * 2048
MAX_HIRES_SCALE = 8.0  # LatentUpscaleBy's and ImageScaleBy's limit
MAX_HIRES_SIZE = 4096
MASKED_CONTENT = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
RESIZE_MODES = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill", 3: "Just resize (latent upscale)"}
AUTOMATIC_VAE = ("", "Automatic", "None")  # A1111's names for "the checkpoint's own VAE"
NO_REFINER = ("", "None")
SAME_AS_FIRST_PASS = (None, "", "Use same sampler", "Use same scheduler")  # A1111's hires choices

# A1111's lowercase scheduler names (its API takes them as well as the labels).
A1111_SCHEDULE_NAMES: dict[str, str | None] = {
    "automatic": None, "uniform": "normal", "karras": "karras", "exponential": "exponential",
    "sgm_uniform": "sgm_uniform", "simple": "simple", "normal": "normal", "ddim": "ddim_uniform", "beta": "beta",
}


# -- field types: the bounds, once ---------------------------------------------------------------------

def _no_bool(value: Any) -> Any:
    """pydantic reads True as 1; a switch given for a number is a mistake."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _round_size(value: Any) -> Any:
    """Sizes round down to a multiple of 8, as A1111's (its latents are size // 8)."""
    value = _no_bool(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(value) // 8 * 8
    return value


def _ui(minimum: float | None = None, maximum: float | None = None, step: float = 1) -> dict:
    """A slider's range in the tabs where it is narrower than the check's (as A1111's UI sliders)."""
    return {"ui": {"minimum": minimum, "maximum": maximum, "step": step}}


def _integer(low: int, high: int, **extra) -> Any:
    return Annotated[int, BeforeValidator(_no_bool), Field(ge=low, le=high, **extra)]


def _number(low: float, high: float, **extra) -> Any:
    return Annotated[float, BeforeValidator(_no_bool), Field(ge=low, le=high, **extra)]


Size = Annotated[int, BeforeValidator(_round_size), Field(ge=MIN_SIZE, le=MAX_SIZE, json_schema_extra=_ui(step=8))]
Steps = _integer(1, MAX_STEPS, json_schema_extra=_ui(maximum=150))
HiresSteps = _integer(0, MAX_STEPS, json_schema_extra=_ui(maximum=150))
CfgScale = _number(0.0, 100.0, json_schema_extra=_ui(maximum=30, step=0.5))
Seed = Annotated[int, BeforeValidator(_no_bool), Field(le=MAX_SEED)]  # below 0: a random seed
BatchSize = _integer(1, MAX_BATCH_SIZE, json_schema_extra=_ui(maximum=8))
BatchCount = _integer(1, MAX_BATCH_COUNT)
ClipSkip = _integer(1, MAX_CLIP_SKIP)
Strength = _number(0.0, 1.0, json_schema_extra=_ui(step=0.01))  # denoising strength, refiner switch
MaskBlur = _integer(0, 64)
MaskedContent = _integer(0, 3)  # MASKED_CONTENT
Padding = _integer(0, 256, json_schema_extra=_ui(step=4))
ResizeMode = _integer(0, 3)  # RESIZE_MODES
HiresScale = _number(1.0, MAX_HIRES_SCALE, json_schema_extra=_ui(maximum=4, step=0.05))
HiresSize = _integer(0, MAX_HIRES_SIZE, json_schema_extra=_ui(maximum=MAX_SIZE, step=8))  # 0: from the scale
SeedDelta = _integer(0, MAX_SEED)
SeedResize = _integer(0, MAX_SIZE, json_schema_extra=_ui(step=8))  # 0: the image's own size
# A1111's "Random number generator source" -> the sampler's noise rule (nodes/runtime/noise.py): its default
# GPU source draws on NVIDIA cards what NV draws anywhere; CPU is torch's CPU generator.
RANDN_SOURCES = {"GPU": "a1111_nv", "NV": "a1111_nv", "CPU": "a1111"}
RandnSource = Literal["GPU", "CPU", "NV"]


class GenerationParams(BaseModel):
    """One generation request (a tab's form or an A1111 request), checked field by field when built;
    a bad field raises BadRequest naming it."""

    model_config = ConfigDict(allow_inf_nan=False, arbitrary_types_allowed=True, extra="forbid")

    prompt: str = ""
    negative_prompt: str = ""
    checkpoint: str = Field(DEFAULT_CHECKPOINT, min_length=1)
    sampler_name: str = Field("euler", min_length=1)  # ComfyUI's name or A1111's ("Euler a", "DPM++ 2M Karras")
    scheduler: str | None = None  # ComfyUI's name or A1111's schedule type; None = A1111's "Automatic"
    steps: Steps = 20
    cfg_scale: CfgScale = 7.0
    seed: Seed = -1  # -1: random, resolved once for the whole request
    randn_source: RandnSource = "GPU"  # A1111's random number source (RANDN_SOURCES)
    eta_noise_seed_delta: SeedDelta = 0  # A1111's ENSD: ancestral step noise from seed + delta
    subseed: Seed = -1  # A1111's variation seed (-1: random), slerped in by subseed_strength
    subseed_strength: Strength = 0.0
    seed_resize_from_w: SeedResize = 0  # A1111's "resize seed from": the noise drawn at this size, centred
    seed_resize_from_h: SeedResize = 0
    width: Size = 512
    height: Size = 512
    batch_size: BatchSize = 1
    n_iter: BatchCount = 1  # batch count: one workflow each, seeds advancing by batch_size
    clip_skip: ClipSkip = 1
    denoising_strength: Strength = 0.75  # img2img, and hires fix's second pass
    init_image: Image.Image | None = None
    mask: Image.Image | None = None  # white = repaint (A1111's convention)
    mask_blur: MaskBlur = 4
    mask_round: bool = True
    inpainting_mask_invert: bool = False
    inpainting_fill: MaskedContent = 1  # 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpaint_full_res: bool = False  # "only masked"
    inpaint_full_res_padding: Padding = 32
    resize_mode: ResizeMode = 0  # 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale
    vae: str | None = None  # a file in models/vae; None (A1111's "Automatic") is the checkpoint's own
    refiner_checkpoint: str | None = None  # a checkpoint that takes over at refiner_switch_at of the steps
    refiner_switch_at: Strength = Field(0.8, json_schema_extra=_ui(minimum=0.01, step=0.01))
    enable_hr: bool = False  # hires fix (txt2img): upscale, then a second pass at denoising_strength
    hr_scale: HiresScale = 2.0
    hr_upscaler: str = "Latent"  # png_metadata.HIRES_UPSCALERS or an upscale model's A1111 name (resolved
    # with enable_hr: the model's file name in models/upscale_models)
    hr_second_pass_steps: HiresSteps = 0  # 0: as many as the first pass
    hr_resize_x: HiresSize = 0  # a size to resize to instead of hr_scale (a 0 keeps the aspect ratio)
    hr_resize_y: HiresSize = 0
    hr_sampler_name: str | None = None  # None: the first pass's sampler (and scheduler)
    hr_scheduler: str | None = None
    hr_prompt: str = ""  # "": the first pass's prompt
    hr_negative_prompt: str = ""
    save_images: bool = True  # False: PreviewImage (temp folder) instead of SaveImage
    filename_prefix: str = "inkwash"

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise bad_request(exc, values) from None

    @model_validator(mode="after")
    def _combinations(self) -> GenerationParams:
        if self.mask is not None and self.init_image is None:
            raise BadRequest("mask", "a mask needs an init image")
        if self.mask is not None and self.resize_mode == 3:
            raise BadRequest("resize_mode", "resize mode 3 (latent upscale) can't be combined with a mask")
        return self

    def replace(self, **changes: Any) -> GenerationParams:
        """A copy with `changes` (not checked again: they come from checked values)."""
        return self.model_copy(update=changes)


FIELDS: dict[str, FieldInfo] = GenerationParams.model_fields


def bounds(name: str) -> tuple[float | None, float | None]:
    """(lowest, highest) value the check accepts for a numeric field (None: unbounded)."""
    low = high = None
    for constraint in FIELDS[name].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return low, high


def slider(name: str) -> dict[str, float]:
    """gr.Slider's minimum, maximum and step for a field: its bounds, or the narrower range its
    declaration gives for the tabs."""
    low, high = bounds(name)
    extra = FIELDS[name].json_schema_extra
    ui = extra.get("ui", {}) if isinstance(extra, dict) else {}
    return {"minimum": ui.get("minimum") if ui.get("minimum") is not None else low,
            "maximum": ui.get("maximum") if ui.get("maximum") is not None else high,
            "step": ui.get("step", 1)}


# -- pydantic's errors -> BadRequest -------------------------------------------------------------------

def bad_request(exc: ValidationError | list[dict], values: dict | None = None) -> BadRequest:
    """The first error of a failed check (pydantic's ValidationError, or the `errors()` of FastAPI's
    RequestValidationError) as a BadRequest naming its field, the message in plain words with the value
    as given (`values`)."""
    errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else list(exc)
    error = errors[0] if errors else {"type": "missing", "loc": (), "msg": "invalid request"}
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, BadRequest):  # raised by a check of the whole request
        return cause
    if error.get("type") == "json_invalid":
        return BadRequest("body", f"not valid JSON ({(error.get('ctx') or {}).get('error', error.get('msg'))})")
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    name = location[0] if location else ""
    given = (values or {}).get(name, error.get("input"))
    return BadRequest(".".join(location) or "request", _message(error, name, given))


def _message(error: dict, name: str, given: Any) -> str:
    kind = error.get("type", "")
    if kind in ("greater_than_equal", "less_than_equal") and name in FIELDS:
        low, high = bounds(name)
        if low is not None and high is not None:
            unit = " pixels" if name in ("width", "height") else ""
            return f"must be between {low:g} and {high:g}{unit}, got {given!r}"
    if kind == "finite_number":
        return f"expected a finite number, got {given!r}"
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"expected an integer, got {given!r}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, got {given!r}"
    if kind in ("string_type",):
        return f"expected text, got {type(given).__name__}"
    if kind == "is_instance_of":
        return f"expected an image, got {type(given).__name__}"
    if kind == "value_error":
        return str((error.get("ctx") or {}).get("error", error.get("msg")))
    return f"{error.get('msg', 'invalid')}, got {given!r}"


# -- resolving: what needs the whole request or the folders ----------------------------------------------

def _schedule(value: Any) -> str | None:
    """ComfyUI scheduler for a ComfyUI name, an A1111 label ("Karras") or A1111 name ("karras");
    None for "Automatic"."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest("scheduler", f"expected a name, got {value!r}")
    if value in SCHEDULER_NAMES:
        return value
    if value in A1111_SCHEDULES:
        return A1111_SCHEDULES[value]
    if value in A1111_SCHEDULE_NAMES:
        return A1111_SCHEDULE_NAMES[value]
    known = ", ".join([*A1111_SCHEDULES, *SCHEDULER_NAMES])
    raise BadRequest("scheduler", f"unknown scheduler {value!r}; known: {known}")


def sampler_and_scheduler(sampler_name: Any, scheduler: Any = None) -> tuple[str, str]:
    """(ComfyUI sampler, ComfyUI scheduler) for ComfyUI or A1111 names. A1111's pre-1.9 combined names
    ("DPM++ 2M Karras") carry the schedule, which wins as in A1111; "Automatic" (or none) picks the
    schedule A1111 uses for that sampler."""
    if not isinstance(sampler_name, str) or not sampler_name:
        raise BadRequest("sampler_name", f"expected a sampler name, got {sampler_name!r}")
    schedule = _schedule(scheduler)
    if sampler_name in SAMPLER_NAMES:
        automatic = next((auto for comfy, auto in A1111_SAMPLERS.values() if comfy == sampler_name), "normal")
        return sampler_name, schedule or automatic
    try:
        comfy, implied = from_a1111(sampler_name)
    except ValueError:
        known = ", ".join([*A1111_SAMPLERS, *SAMPLER_NAMES])
        raise BadRequest("sampler_name", f"unknown sampler {sampler_name!r}; known: {known}") from None
    name = A1111_SAMPLER_ALIASES.get(sampler_name, sampler_name)
    combined = name not in A1111_SAMPLERS  # "DPM++ 2M Karras": the suffix names the schedule
    return comfy, implied if combined or schedule is None else schedule


def checked_name(value: Any, field_name: str, none_values: tuple[str, ...], choices: list[str] | None) -> str | None:
    """A model file name, or None for A1111's "Automatic"/"None"; with `choices`, it must be one."""
    if value is None or value in none_values:
        return None
    if not isinstance(value, str):
        raise BadRequest(field_name, f"expected a file name, got {value!r}")
    if choices is not None and value not in choices:
        raise BadRequest(field_name, f"{value!r} not found; available: {', '.join(choices) or 'none'}")
    return value


def hires_size(width: int, height: int, scale: float, resize_x: int = 0, resize_y: int = 0) -> tuple[int, int]:
    """The second pass's image size: `scale` times the first pass's, or resize_x x resize_y (a 0 keeps
    the aspect ratio; both given, the first pass is centre-cropped to their aspect ratio first)."""
    if resize_x == 0 and resize_y == 0:
        return round(width / 8 * scale) * 8, round(height / 8 * scale) * 8  # LatentUpscaleBy's rounding
    if resize_y == 0:  # the other side keeps the aspect ratio, as LatentUpscale rounds it
        return resize_x // 8 * 8, round(height * resize_x / width) // 8 * 8
    if resize_x == 0:
        return round(width * resize_y / height) // 8 * 8, resize_y // 8 * 8
    return resize_x // 8 * 8, resize_y // 8 * 8


def resolve(params: GenerationParams, folders: Folders | None = None,
            max_pixels: int | None = DEFAULT_MAX_PIXELS) -> GenerationParams:
    """A copy with ComfyUI sampler/scheduler names, a concrete seed and the model files checked (with
    `folders`: the checkpoint, VAE, refiner and prompt LoRAs must exist). Raises BadRequest naming
    the field."""
    if not isinstance(params, GenerationParams):
        raise BadRequest("params", f"expected GenerationParams, got {type(params).__name__}")
    sampler, scheduler = sampler_and_scheduler(params.sampler_name, params.scheduler)
    pixels = params.width * params.height * params.batch_size
    if max_pixels is not None and pixels > max_pixels:
        raise BadRequest("width/height/batch_size", f"{params.width}x{params.height} x {params.batch_size} images "
                         f"is {pixels} pixels, over the limit of {max_pixels}")
    seed = random.randrange(RANDOM_SEEDS) if params.seed < 0 else params.seed
    if seed + params.batch_size * params.n_iter - 1 > MAX_SEED:
        raise BadRequest("seed", f"seed {seed} plus one per image goes past {MAX_SEED}")
    if folders is not None and params.checkpoint not in folders.list("checkpoints"):
        raise BadRequest("checkpoint", f"checkpoint {params.checkpoint!r} not found in the checkpoints folder")
    if folders is not None:
        prompt_lora_tags(params.prompt, folders)  # a tag that can't be read fails here, before anything is stored
    vae = checked_name(params.vae, "vae", AUTOMATIC_VAE, folders.list("vae") if folders else None)
    refiner = checked_name(params.refiner_checkpoint, "refiner_checkpoint", NO_REFINER,
                           folders.list("checkpoints") if folders else None)
    if refiner is not None and params.mask is not None:
        raise BadRequest("refiner_checkpoint", "the refiner can't be combined with an inpainting mask")
    subseed = random.randrange(RANDOM_SEEDS) if params.subseed < 0 else params.subseed
    resolved = params.replace(sampler_name=sampler, scheduler=scheduler, seed=seed, vae=vae, refiner_checkpoint=refiner,
                              subseed=subseed)
    return _resolve_hires(resolved, params, folders, max_pixels) if resolved.enable_hr else resolved


def _resolve_hires(resolved: GenerationParams, params: GenerationParams, folders: Folders | None,
                   max_pixels: int | None) -> GenerationParams:
    """Hires fix's sampler in ComfyUI names, its upscaler (a built-in, or an upscale model's file) and
    its size checked against the limits."""
    upscaler = hires_upscaler(resolved.hr_upscaler or "Latent", folders or current_folders())
    hr_sampler, hr_scheduler = (None if v in SAME_AS_FIRST_PASS else v
                                for v in (params.hr_sampler_name, params.hr_scheduler))
    if hr_sampler is not None or hr_scheduler is not None:
        try:
            hr_sampler, hr_scheduler = sampler_and_scheduler(hr_sampler or params.sampler_name,
                                                             hr_scheduler or params.scheduler)
        except BadRequest as exc:
            raise BadRequest(f"hr_{exc.field}", exc.message) from None
    width, height = hires_size(resolved.width, resolved.height, resolved.hr_scale,
                               resolved.hr_resize_x, resolved.hr_resize_y)
    if not (MIN_SIZE <= min(width, height) and max(width, height) <= MAX_HIRES_SIZE):
        raise BadRequest("hr_scale", f"the hires fix size {width}x{height} is outside {MIN_SIZE} to "
                         f"{MAX_HIRES_SIZE} pixels")
    if max_pixels is not None and width * height * resolved.batch_size > max_pixels:
        raise BadRequest("hr_scale", f"the hires fix size {width}x{height} x {resolved.batch_size} images is "
                         f"over the limit of {max_pixels} pixels")
    return resolved.replace(hr_sampler_name=hr_sampler, hr_scheduler=hr_scheduler, hr_upscaler=upscaler)


def hires_upscaler(name: Any, folders: Folders) -> str:
    """A hires upscaler as the workflow takes it: a built-in's name (png_metadata.HIRES_UPSCALERS) as
    it is, an upscale model's A1111 name (as /sdapi/v1/upscalers lists it) or file name as its file name."""
    if isinstance(name, str) and name in HIRES_UPSCALERS:
        return name
    models = model_upscalers(folders)
    if isinstance(name, str) and name in models:
        return models[name]
    if name in models.values():  # already a file name (resolved once)
        return name
    raise BadRequest("hr_upscaler", f"unknown upscaler {name!r}; available: {', '.join([*HIRES_UPSCALERS, *models])}")


def model_upscalers(folders: Folders) -> dict[str, str]:
    """{A1111 name: upscale_models file name}, as the Extras tab and /sdapi/v1/upscalers name them: the
    file's path without its extension (a .safetensors wins over a pickle of the same name)."""
    names: dict[str, str] = {}
    for filename in sorted(folders.list("upscale_models"), key=lambda f: not f.endswith(".safetensors")):
        names.setdefault(os.path.splitext(filename)[0], filename)
    return dict(sorted(names.items(), key=lambda item: item[0].lower()))


def prompt_lora_tags(prompt: str, folders: Folders | None) -> tuple[str, list[prompt_loras.LoraTag], list[str]]:
    """(the prompt without its <lora:name:weight> tags, the tags whose LoRA is in the loras folder of
    `folders` (or the current ones), the names of those that are not). A tag that can't be read is
    a BadRequest."""
    try:
        stripped, loras = prompt_loras.extract(prompt)
    except prompt_loras.LoraTagError as err:
        raise BadRequest("prompt", str(err)) from None
    found, missing = prompt_loras.split_missing(loras, folders or current_folders())
    return stripped, found, missing


def iteration_seeds(params: GenerationParams, iteration: int) -> list[int]:
    """The seeds of a batch-count iteration's images, as A1111's all_seeds."""
    first = params.seed + iteration * params.batch_size
    return [first + i for i in range(params.batch_size)]
