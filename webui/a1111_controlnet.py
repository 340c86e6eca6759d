"""The ControlNet extension's API (sd-webui-controlnet) on Inkwash's ControlNet nodes.

A1111 clients send ControlNet as `alwayson_scripts: {"controlnet": {"args": [unit, ...]}}` in their
txt2img / img2img bodies, and probe /controlnet/model_list, /module_list, /version, /control_types
and /controlnet/detect. Each enabled unit becomes, in every workflow generation.py built:

    LoadImage (the unit's image, resized to the generation size) -> preprocessor node (Canny or
    MiDaS-DepthMapPreprocessor; none for module "none") -> ControlNetApplyAdvanced (with a
    ControlNetLoader) between the prompt encoders and each sampler; the hires-fix sampler gets the
    hint made again at its size, as the extension makes it.

Units are read as the extension reads them: its legacy aliases (input_image, guidance, lowvram),
"enabled" true unless sent false (its older API units' default, which its documented API
examples rely on), resize and control modes by name or number,
and model names with or without the " [hash]" it lists them with. What Inkwash cannot run exactly is
refused with BadRequest naming the unit's field; the refiner pass gets no ControlNet (SDXL refiners
have none).
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Body
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image

from ..nodes.folders import Folders
from ..nodes.runtime.annotators import AnnotatorWeightsMissing
from ..nodes.runtime.images import pil_to_tensor, tensor_to_pil
from . import a1111_images, generation, generation_passes
from .bad_request import BadRequest
from .json_errors import Refused

API_VERSION = 2  # what the extension's /controlnet/version answers for this API

ARGS_FIELD = "alwayson_scripts.controlnet.args"

# The extension's module names Inkwash runs, each with the node that runs it (None: the image as is).
MODULE_NODES: dict[str, str | None] = {"none": None, "canny": "Canny", "depth": "MiDaS-DepthMapPreprocessor"}
# Its UI names (module_list?alias_names=true) and the other names clients send for them.
MODULE_UI_NAMES = {"depth": "depth_midas"}
MODULE_ALIASES = {"depth_midas": "depth", "midas": "depth", "None": "none", "": "none"}

_RESOLUTION = {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048}
# The extension's slider config per module: processor_res, threshold_a, threshold_b.
MODULE_SLIDERS: dict[str, list[dict]] = {
    "none": [],
    "canny": [_RESOLUTION, {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255},
              {"name": "Canny High Threshold", "value": 200, "min": 1, "max": 255}],
    "depth": [_RESOLUTION],
}
MODEL_FREE: set[str] = set()  # the extension's modules that need no model (reference_only, ...): none here

CONTROL_MODES = {"Balanced": 0, "My prompt is more important": 1, "ControlNet is more important": 2}
RESIZE_MODES = {"Just Resize": 0, "Crop and Resize": 1, "Resize and Fill": 2,
                "Inner Fit (Scale to Fit)": 1, "Outer Fit (Shrink to Fit)": 2,
                "Scale to Fit (Inner Fit)": 1, "Envelope (Outer Fit)": 2}
HR_OPTIONS = ("Both", "Low res only", "High res only")
LEGACY_FIELDS = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram"}
CONTROL_TYPES = {"All": "all", "Canny": "canny", "Depth": "depth"}

_NO_APPLY = ("CLIPTextEncodeSDXLRefiner",)  # samplers fed by these (the refiner) get no ControlNet
_SAMPLERS = ("KSampler", "KSamplerAdvanced")


@dataclass
class ControlUnit:
    """One enabled unit, checked: names resolved to Inkwash's, numbers in range."""

    index: int  # its place in the request's args, for messages and node ids
    module: str  # a key of MODULE_NODES
    model: str  # a file name in the controlnet folder
    weight: float = 1.0
    image: Image.Image | None = None  # None: img2img's init image
    resize_mode: int = 1  # 0 just resize, 1 crop and resize, 2 resize and fill
    processor_res: int = 512
    threshold_a: float = 100
    threshold_b: float = 200
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    hr_option: str = "Both"
    warnings: list[str] = field(default_factory=list)


# -- models and modules ----------------------------------------------------------------------------------

def _extension_hash(path: str | os.PathLike) -> str:
    """A1111's old model hash, which the extension lists models with: sha256 of 64 KiB at 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        file.seek(0x100000)
        digest.update(file.read(0x10000))
    return digest.hexdigest()[:8]


def model_names(folders: Folders) -> dict[str, str]:
    """"name [hash]" -> file name in the controlnet folder, by name as the extension lists them."""
    files: dict[str, str] = {}
    for name in folders.list("controlnet"):
        stem = os.path.splitext(os.path.basename(name))[0]
        path = folders.find("controlnet", name)
        if stem == "None" or path.is_dir():
            continue
        files.setdefault(f"{stem} [{_extension_hash(path)}]", name)
    return dict(sorted(files.items(), key=lambda item: item[0].lower()))


def find_model(value: Any, folders: Folders) -> str | None:
    """The controlnet file a unit's model names, matched as the extension does: the listed
    "name [hash]", the name without its hash (any case), the file name, or else the shortest listed
    name containing it; None when nothing matches."""
    if not isinstance(value, str) or not value.strip() or value == "None":
        return None
    listed = model_names(folders)
    if value in listed:
        return listed[value]
    if value in listed.values():
        return value
    wanted = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", value.strip()).lower()
    by_stem = {name.rsplit(" [", 1)[0].lower(): file for name, file in listed.items()}
    for candidate in (wanted, os.path.splitext(wanted)[0]):
        if candidate in by_stem:
            return by_stem[candidate]
    containing = sorted((stem for stem in by_stem if wanted in stem), key=len)
    return by_stem[containing[0]] if containing else None


def module_key(value: Any) -> str | None:
    """The MODULE_NODES key for a module name the extension takes, or None."""
    if not isinstance(value, str):
        return None
    name = MODULE_ALIASES.get(value, value)
    name = MODULE_ALIASES.get(name.lower(), name.lower())
    return name if name in MODULE_NODES else None


def module_list(alias_names: bool = False) -> dict:
    names = [MODULE_UI_NAMES.get(m, m) if alias_names else m for m in MODULE_NODES]
    detail = {name: {"model_free": key in MODEL_FREE, "sliders": MODULE_SLIDERS[key]}
              for name, key in zip(names, MODULE_NODES)}
    return {"module_list": names, "module_detail": detail}


def control_types(folders: Folders) -> dict:
    """The extension's control types for the modules Inkwash has, each with its modules and models."""
    models = ["None", *model_names(folders)]
    modules = ["none", *(MODULE_UI_NAMES.get(m, m) for m in MODULE_NODES if m != "none")]
    types = {}
    for label, pattern in CONTROL_TYPES.items():
        if pattern == "all":
            types[label] = {"module_list": modules, "model_list": models,
                            "default_option": "none", "default_model": "None"}
            continue
        these_modules = [m for m in modules if pattern in m or m == "none"]
        these_models = [m for m in models if pattern in m.lower() or m == "None"]
        types[label] = {"module_list": these_modules, "model_list": these_models,
                        "default_option": next((m for m in these_modules if m != "none"), "none"),
                        "default_model": these_models[1] if len(these_models) > 1 else "None"}
    return {"control_types": types}


# -- reading units ---------------------------------------------------------------------------------------

def controlnet_args(alwayson_scripts: Any) -> tuple[list, dict]:
    """(the ControlNet units of a request's alwayson_scripts, its other scripts). A1111 matches
    script names without regard to case."""
    if not alwayson_scripts:
        return [], {}
    if not isinstance(alwayson_scripts, dict):
        raise BadRequest("alwayson_scripts", "expected an object of script names")
    units: list = []
    others = {}
    for name, value in alwayson_scripts.items():
        if str(name).lower() != "controlnet":
            others[name] = value
            continue
        args = value.get("args", []) if isinstance(value, dict) else value
        if not isinstance(args, list):
            raise BadRequest(ARGS_FIELD, "expected a list of ControlNet units")
        units = args
    return units, others


def _number(unit: dict, where: str, name: str, default: float, low: float, high: float) -> float:
    value = unit.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise BadRequest(f"{where}.{name}", f"expected a number, got {value!r}")
    if not low <= value <= high:
        raise BadRequest(f"{where}.{name}", f"must be between {low} and {high}, got {value}")
    return float(value)


def _choice(unit: dict, where: str, name: str, names: dict[str, int], default: int) -> int:
    """A mode given by name or by number, as the extension's enums take it."""
    value = unit.get(name, default)
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in names.values():
        return value
    known = ", ".join(f"{n!r}" for n in names)
    raise BadRequest(f"{where}.{name}", f"unknown value {value!r}; known: {known} or their numbers")


def _slider(unit: dict, where: str, name: str, slider: dict | None, warnings: list[str]) -> float:
    """A processor_res / threshold value; out of the slider's range it is the default, as the extension
    resets it (with a warning unless it was the -1 that means "default")."""
    value = unit.get(name, -1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise BadRequest(f"{where}{name}", f"expected a number, got {value!r}")
    if slider is None:
        return float(value)
    if not slider["min"] <= value <= slider["max"]:
        if value != -1:
            warnings.append(f"{where}{name}: {value} is outside {slider['min']} to "
                            f"{slider['max']}; used {slider['value']}")
        return float(slider["value"])
    return float(value)


def _unit_image(unit: dict, index: int, max_bytes: int) -> Image.Image | None:
    from .a1111_api import decode_base64_image  # the A1111 API's own decoding and limits

    image = unit.get("image")
    if isinstance(image, dict):  # {"image": ..., "mask": ...}: the extension's masks are for inpaint modules
        image = image.get("image")
    elif isinstance(image, (list, tuple)):
        if len(image) != 2 or isinstance(image[0], dict):
            raise BadRequest(f"{ARGS_FIELD}[{index}].image", "only one image per unit is supported")
        image = image[0]
    if not image:
        return None
    return decode_base64_image(f"{ARGS_FIELD}[{index}].image", image, max_bytes)


def parse_unit(unit: Any, index: int, folders: Folders, max_bytes: int = 64 * 2**20) -> ControlUnit | None:
    """A request's unit checked and resolved, or None when it is disabled (or its model is "None", which
    the extension skips too). Raises BadRequest naming the unit's field."""
    where = f"{ARGS_FIELD}[{index}]"
    if not isinstance(unit, dict):
        raise BadRequest(where, "expected a ControlNet unit object")
    unit = dict(unit)
    for alias, name in LEGACY_FIELDS.items():
        if alias in unit:
            if name in unit:
                raise BadRequest(f"{where}.{alias}", f"both {alias!r} and {name!r} are given")
            unit[name] = unit.pop(alias)
    if not unit.get("enabled", True):
        return None
    module = module_key(unit.get("module", "none"))
    if module is None:
        known = ", ".join([*MODULE_NODES, *MODULE_UI_NAMES.values()])
        raise BadRequest(f"{where}.module", f"module {unit.get('module')!r} is not available; Inkwash has: {known}")
    requested = unit.get("model", "None")
    if requested in (None, "", "None", "none"):
        return None
    model = find_model(requested, folders)
    if model is None:
        listed = ", ".join(model_names(folders)) or "none"
        raise BadRequest(f"{where}.model", f"model {requested!r} not found in the controlnet folder; "
                         f"available: {listed}")
    mode = _choice(unit, where, "control_mode", CONTROL_MODES, 0)
    if mode != 0:
        raise BadRequest(f"{where}.control_mode", f"{list(CONTROL_MODES)[mode]!r} is not supported: its "
                         "per-layer softened weights are not in Inkwash's ControlNet; use 'Balanced'")
    warnings: list[str] = []
    sliders = MODULE_SLIDERS[module] + [None] * 3
    start = _number(unit, where, "guidance_start", 0.0, 0.0, 1.0)
    end = _number(unit, where, "guidance_end", 1.0, 0.0, 1.0)
    if start > end:
        raise BadRequest(f"{where}.guidance_start", f"guidance_start ({start}) is after guidance_end ({end})")
    hr_option = unit.get("hr_option", "Both")
    hr_option = HR_OPTIONS[hr_option] if isinstance(hr_option, int) and 0 <= hr_option < 3 else hr_option
    if hr_option not in HR_OPTIONS:
        raise BadRequest(f"{where}.hr_option", f"unknown value {hr_option!r}; known: {', '.join(HR_OPTIONS)}")
    return ControlUnit(
        index=index, module=module, model=model,
        weight=_number(unit, where, "weight", 1.0, 0.0, 10.0),  # the Apply ControlNet node's range
        image=_unit_image(unit, index, max_bytes),
        # 3 is A1111's "just resize (latent upscale)", which the extension takes as just resize
        resize_mode=0 if unit.get("resize_mode") == 3 else _choice(unit, where, "resize_mode", RESIZE_MODES, 1),
        processor_res=int(_slider(unit, f"{where}.", "processor_res", sliders[0], warnings)),
        threshold_a=_slider(unit, f"{where}.", "threshold_a", sliders[1], warnings),
        threshold_b=_slider(unit, f"{where}.", "threshold_b", sliders[2], warnings),
        guidance_start=start, guidance_end=end, pixel_perfect=bool(unit.get("pixel_perfect", False)),
        hr_option=hr_option, warnings=warnings)


def parse_units(args: Any, folders: Folders, max_bytes: int = 64 * 2**20) -> list[ControlUnit]:
    """The enabled units of `alwayson_scripts.controlnet.args`, checked (BadRequest naming the field)."""
    if not isinstance(args, list):
        raise BadRequest(ARGS_FIELD, "expected a list of ControlNet units")
    return [u for i, unit in enumerate(args) if (u := parse_unit(unit, i, folders, max_bytes)) is not None]


# -- building --------------------------------------------------------------------------------------------

def pixel_perfect_resolution(image: Image.Image, width: int, height: int, resize_mode: int) -> int:
    """The extension's pixel-perfect preprocessor resolution: the input's shorter side scaled as the
    resize mode scales it to the generation size."""
    scales = (height / image.height, width / image.width)
    scale = min(scales) if resize_mode == 2 else max(scales)
    return int(round(scale * min(image.width, image.height)))


def control_image(unit: ControlUnit, params: generation.GenerationParams, size: tuple[int, int],
                  crop_box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """The unit's image (img2img's init image when it has none) at `size`, resized by its resize mode
    as A1111 resizes (crop and resize, just resize, resize and fill). With inpainting's "only masked"
    `crop_box` (x, y, w, h on the init image), it is first fitted to the init image and cropped there,
    as the extension does."""
    image = source_image(unit, params)
    if crop_box is not None and params.init_image is not None:
        x, y, w, h = crop_box
        fitted = a1111_images.resize_image(unit.resize_mode, image, *params.init_image.size)
        return a1111_images.resize_image(2, fitted.crop((x, y, x + w, y + h)), *size)
    return a1111_images.resize_image(unit.resize_mode, image, *size)


def source_image(unit: ControlUnit, params: generation.GenerationParams) -> Image.Image:
    image = unit.image if unit.image is not None else params.init_image
    if image is None:
        raise BadRequest(f"{ARGS_FIELD}[{unit.index}].image", "this unit needs an image (txt2img has no init image)")
    return a1111_images.flatten(image)


def hint_sizes(params: generation.GenerationParams) -> dict[str, tuple[int, int]]:
    """The sizes a unit's hint is made at: the generation's, and with hires fix (txt2img) the second
    pass's, for which the extension runs the preprocessor again at that size."""
    sizes = {"": (params.width, params.height)}
    if params.enable_hr and params.init_image is None:  # img2img has no hires pass
        sizes["_hires"] = generation_passes.hires_size(params.width, params.height, params.hr_scale,
                                                       params.hr_resize_x, params.hr_resize_y)
    return sizes


def _node(class_type: str, title: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def _preprocessor(unit: ControlUnit, image_link: list, source: Image.Image, size: tuple[int, int]) -> dict | None:
    node = MODULE_NODES[unit.module]
    title = f"ControlNet unit {unit.index}: {unit.module}"
    if node == "Canny":  # the extension's thresholds are 0-255, the node's fractions of that
        low, high = sorted((unit.threshold_a, unit.threshold_b))
        return _node("Canny", title, image=image_link, low_threshold=min(max(low / 255, 0.01), 0.99),
                     high_threshold=min(max(high / 255, 0.01), 0.99))
    if node == "MiDaS-DepthMapPreprocessor":
        resolution = (pixel_perfect_resolution(source, *size, unit.resize_mode)
                      if unit.pixel_perfect else unit.processor_res)
        return _node(node, title, image=image_link, resolution=max(64, min(16384, resolution)))
    return None


def _samplers(workflow: dict, unit: ControlUnit) -> list[str]:
    """The samplers a unit conditions: every one but the refiner's, narrowed by its hires-fix option."""
    ids = [node_id for node_id, node in workflow.items() if node["class_type"] in _SAMPLERS
           and workflow.get(node["inputs"]["positive"][0], {}).get("class_type") not in _NO_APPLY]
    hires = generation_passes.HIRES_SAMPLER
    if hires in ids and unit.hr_option == "Low res only":
        ids.remove(hires)
    elif hires in ids and unit.hr_option == "High res only":
        ids = [hires]
    return ids


def add_controlnet_units(workflow: dict, units: list[ControlUnit], image_names: dict[int, dict[str, str]],
                         params: generation.GenerationParams) -> None:
    """Edit a workflow built by generation.py: each unit's image (stored in the input folder as
    image_names[unit.index][pass], pass "" or, for the hires-fix sampler, "_hires") through its
    preprocessor and ControlNetApplyAdvanced, chained in the units' order, between the prompt encoders
    and the samplers."""
    sizes = hint_sizes(params)
    chains: dict[tuple, str] = {}  # (positive, negative, unit, pass) -> its Apply node: batch branches share one
    for unit in units:
        prefix = f"cn{unit.index}"
        workflow[f"{prefix}_loader"] = _node("ControlNetLoader", f"ControlNet unit {unit.index} model",
                                             control_net_name=unit.model)
        hints = {}
        for suffix, name in image_names[unit.index].items():
            workflow[f"{prefix}_image{suffix}"] = _node("LoadImage", f"ControlNet unit {unit.index} image", image=name)
            hints[suffix] = [f"{prefix}_image{suffix}", 0]
            pre = _preprocessor(unit, hints[suffix], source_image(unit, params), sizes[suffix])
            if pre is not None:
                workflow[f"{prefix}_pre{suffix}"] = pre
                hints[suffix] = [f"{prefix}_pre{suffix}", 0]
        for sampler in _samplers(workflow, unit):
            suffix = "_hires" if sampler == generation_passes.HIRES_SAMPLER and "_hires" in hints else ""
            inputs = workflow[sampler]["inputs"]
            key = (tuple(inputs["positive"]), tuple(inputs["negative"]), unit.index, suffix)
            if key not in chains:
                count = sum(k[2:] == key[2:] for k in chains)
                apply_id = f"{prefix}_apply{suffix}" + (f"_{count}" if count else "")
                workflow[apply_id] = _node(
                    "ControlNetApplyAdvanced", f"ControlNet unit {unit.index}", positive=list(inputs["positive"]),
                    negative=list(inputs["negative"]), control_net=[f"{prefix}_loader", 0], image=hints[suffix],
                    strength=unit.weight, start_percent=unit.guidance_start, end_percent=unit.guidance_end)
                chains[key] = apply_id
            inputs["positive"], inputs["negative"] = [chains[key], 0], [chains[key], 1]


def apply_to_plan(plan: generation.Plan, args: list, folders: Folders, max_bytes: int = 64 * 2**20) -> list[str]:
    """Add a request's ControlNet units (`alwayson_scripts.controlnet.args`) to every workflow of a plan
    built by generation.build_txt2img / build_img2img; the warnings to report. Each unit's images are
    stored once in the input folder (listed with the plan's inputs when it has them)."""
    units = parse_units(args, folders, max_bytes)
    overlay = plan.inputs.overlay if plan.inputs is not None else None
    crop_box = overlay.paste_box if overlay is not None else None
    sizes = hint_sizes(plan.params)
    skip = {"Low res only": "_hires", "High res only": "" if "_hires" in sizes else None}
    images = {unit.index: {suffix: control_image(unit, plan.params, size, crop_box)
                           for suffix, size in sizes.items() if suffix != skip.get(unit.hr_option)}
              for unit in units}  # every check before anything is written
    names = {index: {suffix: generation.store_input_image(folders, image, f"controlnet/unit{index}{suffix}")
                     for suffix, image in by_pass.items()} for index, by_pass in images.items()}
    if plan.inputs is not None:
        plan.inputs.stored.extend(name for by_pass in names.values() for name in by_pass.values())
    for workflow in plan.workflows:
        add_controlnet_units(workflow, units, names, plan.params)
    return [warning for unit in units for warning in unit.warnings]


# -- detect ----------------------------------------------------------------------------------------------

def detect(module: Any, images: list[str], processor_res: float = -1, threshold_a: float = -1,
           threshold_b: float = -1, max_bytes: int = 64 * 2**20) -> list[Image.Image]:
    """The extension's /controlnet/detect: `module` run on each base64 image by Inkwash's preprocessor
    nodes, at processor_res (the input's shorter side scaled to it)."""
    from ..nodes.core.preprocessors import NODES  # the nodes, not their runtime, so both stay one thing
    from .a1111_api import decode_base64_image

    key = module_key(module)
    if key is None:
        known = ", ".join([*MODULE_NODES, *MODULE_UI_NAMES.values()])
        raise BadRequest("controlnet_module", f"module {module!r} is not available; Inkwash has: {known}")
    if not images:
        raise BadRequest("controlnet_input_images", "no image given")
    sliders = MODULE_SLIDERS[key] + [None] * 3
    settings = {"processor_res": processor_res, "threshold_a": threshold_a, "threshold_b": threshold_b}
    res, low, high = (_slider(settings, "controlnet_", name, slider, [])
                      for name, slider in zip(settings, sliders))
    results = []
    for i, data in enumerate(images):
        image = a1111_images.flatten(decode_base64_image(f"controlnet_input_images[{i}]", data, max_bytes))
        if key == "none":
            results.append(image)
            continue
        scale = res / min(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        node = NODES[MODULE_NODES[key]]()
        if key == "canny":
            low, high = sorted((low, high))
            (out,) = node.run(pil_to_tensor(image), min(max(low / 255, 0.01), 0.99), min(max(high / 255, 0.01), 0.99))
        else:
            try:
                (out,) = node.run(pil_to_tensor(image), resolution=int(res))
            except AnnotatorWeightsMissing as err:
                raise BadRequest("controlnet_module", f"module {module!r} can't run here: {err}") from None
        results.append(tensor_to_pil(out[0]))
    return results


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- routes ----------------------------------------------------------------------------------------------

def router(ctx) -> APIRouter:
    """The extension's /controlnet routes on a ServerContext (its folders and upload limit)."""
    routes = APIRouter(prefix="/controlnet", tags=["A1111 ControlNet"])

    def error(exc: BadRequest) -> JSONResponse:
        return Refused(422, str(exc), a1111="BadRequest", field=exc.field, errors=str(exc)).response()

    @routes.get("/version")
    def version():
        return {"version": API_VERSION}

    @routes.get("/model_list")
    def models(update: bool = True):
        return {"model_list": list(model_names(ctx.folders))}

    @routes.get("/module_list")
    def modules(alias_names: bool = False):
        return module_list(alias_names)

    @routes.get("/control_types")
    def types():
        return control_types(ctx.folders)

    @routes.get("/settings")
    def settings():
        return {"control_net_unit_count": 3}

    @routes.post("/detect")
    async def detect_route(controlnet_module: Any = Body("none"), controlnet_input_images: Any = Body([]),
                           controlnet_processor_res: Any = Body(-1), controlnet_threshold_a: Any = Body(-1),
                           controlnet_threshold_b: Any = Body(-1), controlnet_masks: Any = Body([]),
                           low_vram: Any = Body(False)):
        if not isinstance(controlnet_input_images, list):
            return error(BadRequest("controlnet_input_images", "expected a list of base64 images"))
        try:
            images = await run_in_threadpool(
                detect, controlnet_module, controlnet_input_images, controlnet_processor_res,
                controlnet_threshold_a, controlnet_threshold_b, ctx.max_upload_bytes)
        except BadRequest as exc:
            return error(exc)
        return {"images": [_png_base64(image) for image in images], "info": "Success"}

    return routes
