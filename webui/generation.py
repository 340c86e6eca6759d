"""Generation parameters (webui/parameters.py, from the tabs or the A1111 API) -> API-format workflows:
txt2img, img2img, inpaint and depth2img, with hires fix, the refiner and a VAE file (generation_passes.py).

Every workflow is one of workflows/*.json (webui/templates.py names their nodes) with its node inputs
patched, so a saved image's embedded workflow looks like the template it came from. What the nodes
cannot do is done in PIL (webui/a1111_images.py):

  in the graph   resize modes 0/1 without a mask (ImageScale), 3 (LatentUpscale), the noise mask
                 (LoadImageMask + SetLatentNoiseMask), "latent nothing" (VAEEncodeForInpaint),
                 clip skip (CLIPSetLastLayer), batches; hires fix, the refiner and a VAE file.
  before (PIL)   on the stored input image and mask: resize mode 2 "resize and fill"; with a mask,
                 every resize mode (a MASK can't go through ImageScale); mask rounding, inversion and
                 blur; the "only masked" crop; masked content "fill" and "latent noise" (approximated
                 by seeded pixel noise: no node writes random values into a latent).
  after (PIL)    inpainting only: A1111's overlay of the untouched pixels and the paste-back of an
                 "only masked" crop, written over the saved PNG with its metadata kept.
"""
from __future__ import annotations

import copy
import json
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image

from ..nodes.folders import Folders, safe_path
from ..nodes.folders import current as current_folders
from ..nodes.formats import embedding_names as embeddings
from . import generation_passes, prompt_loras
from .a1111_images import (
    InpaintOverlay,
    crop_region,
    flatten,
    inpaint_inputs,
    inpaint_mask,
    postprocess_saved,
    resize_image,
    write_png,
)
from .bad_request import BadRequest
from .templates import (  # noqa: F401  (WORKFLOWS_DIR, template: for the callers of the generation layer)
    CLIP_SKIP,
    IMAGE_SCALE,
    LATENT_UPSCALE,
    LOAD_MASK,
    NODES,
    TXT2IMG,
    WORKFLOWS_DIR,
    TemplateNodes,
    template,
)
from .parameters import (  # noqa: F401  (the names callers of the generation layer use)
    DEFAULT_MAX_PIXELS,
    RANDN_SOURCES,
    RANDOM_SEEDS,
    GenerationParams,
    iteration_seeds,
    prompt_lora_tags,
    resolve,
    sampler_and_scheduler,
)

DEFAULT_CONTROLNET = "inkwash-demo-depth.safetensors"
UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"  # its input channels tell an SD 2 depth UNet



# -- workflows -------------------------------------------------------------------------------------------

def _patch_common(workflow: dict, nodes: TemplateNodes, params: GenerationParams, seed: int, denoise: float) -> None:
    """What every template takes the same way: checkpoint, prompts (embedding names marked), sampler
    settings, clip skip, and where the images go."""
    workflow[nodes.checkpoint]["inputs"]["ckpt_name"] = params.checkpoint
    embedding_names = embeddings.list_names()  # A1111 takes bare embedding names: mark them for the encoder
    workflow[nodes.positive]["inputs"]["text"] = embeddings.mark_names(params.prompt, embedding_names)
    workflow[nodes.negative]["inputs"]["text"] = embeddings.mark_names(params.negative_prompt, embedding_names)
    workflow[nodes.sampler]["inputs"].update(seed=seed, steps=params.steps, cfg=params.cfg_scale,
                                             sampler_name=params.sampler_name, scheduler=params.scheduler,
                                             denoise=denoise, noise_rule=RANDN_SOURCES[params.randn_source],
                                             eta_noise_seed_delta=params.eta_noise_seed_delta)
    add_clip_skip(workflow, params.clip_skip, nodes)
    if params.save_images:
        workflow[nodes.save]["inputs"]["filename_prefix"] = params.filename_prefix
    else:
        workflow[nodes.save] = {"class_type": "PreviewImage", "inputs": {"images": [nodes.decode, 0]}}


def add_clip_skip(workflow: dict, clip_skip: int, nodes: TemplateNodes = TXT2IMG) -> None:
    """A1111's clip skip: the prompts encoded by the checkpoint's CLIP stopped early."""
    if clip_skip > 1:
        workflow[CLIP_SKIP] = {"class_type": "CLIPSetLastLayer",
                               "inputs": {"clip": [nodes.checkpoint, 1], "stop_at_clip_layer": -clip_skip}}
        workflow[nodes.positive]["inputs"]["clip"] = workflow[nodes.negative]["inputs"]["clip"] = [CLIP_SKIP, 0]


def txt2img_workflow(params: GenerationParams, iteration: int = 0) -> dict:
    """The txt2img workflow of one batch-count iteration. `params` should be resolved (a seed of -1
    is drawn here otherwise, and the iterations of one request would not share it)."""
    params = resolve(params, max_pixels=None)
    workflow, nodes = template("txt2img"), TXT2IMG
    _patch_common(workflow, nodes, params, iteration_seeds(params, iteration)[0], 1.0)
    workflow[nodes.empty_latent]["inputs"].update(width=params.width, height=params.height,
                                                  batch_size=params.batch_size)
    generation_passes.add_passes(workflow, params, [nodes.sampler], hires=True, decoder=nodes.decode)
    return workflow


def img2img_workflow(params: GenerationParams, init_image_name: str, mask_name: str | None = None,
                     iteration: int = 0, *, resized: bool = False) -> dict:
    """The img2img (inpaint, with a mask) workflow of one iteration, on images in the input folder.

    Unless `resized` (the stored image is already width x height, as prepare_img2img leaves it), the
    resize mode is done by ImageScale (0, 1) or LatentUpscale (3); mode 2 and masks need
    prepare_img2img. A batch is one sampler/decoder/saver branch per image, since one init image
    encodes to a batch of one; image i gets seed + i, as it would in a batch."""
    params = resolve(params, max_pixels=None)
    if mask_name is not None and not resized:
        raise BadRequest("mask", "a mask must be prepared (prepare_img2img) to the image size first")
    if params.resize_mode == 2 and not resized:
        raise BadRequest("resize_mode", "resize mode 2 (resize and fill) needs prepare_img2img")
    name = "inpaint" if mask_name is not None else "img2img"
    workflow, nodes = template(name), NODES[name]
    seeds = iteration_seeds(params, iteration)
    _patch_common(workflow, nodes, params, seeds[0], params.denoising_strength)
    workflow[nodes.load_image]["inputs"]["image"] = init_image_name
    if not resized and params.resize_mode in (0, 1):
        workflow[IMAGE_SCALE] = {"class_type": "ImageScale", "inputs": {
            "image": [nodes.load_image, 0], "upscale_method": "lanczos", "width": params.width,
            "height": params.height, "crop": "center" if params.resize_mode == 1 else "disabled"}}
        workflow[nodes.encode]["inputs"]["pixels"] = [IMAGE_SCALE, 0]
    if not resized and params.resize_mode == 3:
        workflow[LATENT_UPSCALE] = {"class_type": "LatentUpscale", "inputs": {
            "samples": [nodes.encode, 0], "upscale_method": "bilinear", "width": params.width,
            "height": params.height, "crop": "disabled"}}
        workflow[nodes.sampler]["inputs"]["latent_image"] = [LATENT_UPSCALE, 0]
    if mask_name is not None:
        # A separate grayscale mask (white = repaint); red of an L image is its gray value.
        workflow[LOAD_MASK] = {"class_type": "LoadImageMask", "inputs": {"image": mask_name, "channel": "red"}}
        workflow[nodes.noise_mask]["inputs"]["mask"] = [LOAD_MASK, 0]
        if params.inpainting_fill == 3:  # latent nothing: encode with the masked pixels greyed out
            workflow[nodes.encode] = {"class_type": "VAEEncodeForInpaint", "inputs": {
                "pixels": [nodes.load_image, 0], "vae": [nodes.checkpoint, 2], "mask": [LOAD_MASK, 0],
                "grow_mask_by": 0}}
    samplers = _add_branches(workflow, nodes, seeds)
    generation_passes.add_passes(workflow, params, samplers, decoder=nodes.decode)
    return workflow


def depth2img_workflow(params: GenerationParams, init_image_name: str, iteration: int = 0, *,
                       controlnet: str | None = DEFAULT_CONTROLNET, sd2_depth: bool = False) -> dict:
    """depth2img's workflow of one iteration, on an input image already at width x height: the depth
    map guides a depth ControlNet (workflows/depth2img.json) or, for an SD 2 depth checkpoint, goes
    into its UNet (workflows/depth2img_sd2.json). `params` resolved."""
    params = resolve(params, max_pixels=None)
    name = "depth2img_sd2" if sd2_depth else "depth2img"
    workflow, nodes = template(name), NODES[name]
    seeds = iteration_seeds(params, iteration)
    _patch_common(workflow, nodes, params, seeds[0], params.denoising_strength)
    workflow[nodes.load_image]["inputs"]["image"] = init_image_name
    # the estimator's working size: the short side, in its steps of 64
    workflow[nodes.preprocessor]["inputs"]["resolution"] = max(64, round(min(params.width, params.height) / 64) * 64)
    if not sd2_depth:
        if not controlnet:
            raise BadRequest("controlnet", "depth2img needs a depth ControlNet in models/controlnet")
        workflow[nodes.controlnet_loader]["inputs"]["control_net_name"] = controlnet
    samplers = _add_branches(workflow, nodes, seeds)
    generation_passes.add_passes(workflow, params, samplers, decoder=nodes.decode)  # the VAE choice
    return workflow


def _add_branches(workflow: dict, nodes: TemplateNodes, seeds: list[int]) -> list[str]:
    """Another sampler -> decoder -> saver branch from the same latent for each image of a batch after
    the first (ids "3_1", "8_1", "9_1"...), seeded as it would be in a batch; the samplers' ids."""
    samplers = [nodes.sampler]
    for index, seed in enumerate(seeds[1:], start=1):
        sampler, decoder, saver = (copy.deepcopy(workflow[n]) for n in (nodes.sampler, nodes.decode, nodes.save))
        sampler["inputs"]["seed"] = seed
        decoder["inputs"]["samples"] = [f"{nodes.sampler}_{index}", 0]
        saver["inputs"]["images"] = [f"{nodes.decode}_{index}", 0]
        workflow[f"{nodes.sampler}_{index}"], workflow[f"{nodes.decode}_{index}"] = sampler, decoder
        workflow[f"{nodes.save}_{index}"] = saver
        samplers.append(f"{nodes.sampler}_{index}")
    return samplers


def output_nodes(workflow: dict) -> list[str]:
    """The saver nodes of a generated workflow, in image order."""
    save = TXT2IMG.save  # the same id in every template
    ids = [n for n in workflow if n == save or n.startswith(f"{save}_")]
    return sorted(ids, key=lambda n: 0 if n == save else int(n[len(save) + 1:]))


# -- depth models ----------------------------------------------------------------------------------------

def depth_controlnets(folders: Folders) -> list[str]:
    """ControlNets that look like depth ones first, then the rest."""
    names = folders.list("controlnet")
    return sorted(names, key=lambda n: ("depth" not in n.lower(), n != DEFAULT_CONTROLNET, n))


def is_depth_checkpoint(folders: Folders, name: str | None) -> bool:
    """Whether the checkpoint's UNet takes a depth channel (SD 2 depth: 5 input channels)."""
    if not name:
        return False
    try:
        path = folders.find("checkpoints", name)
        return _in_channels(str(path), path.stat().st_mtime_ns) == 5
    except (OSError, ValueError):
        return False


@lru_cache(maxsize=64)
def _in_channels(path: str, _mtime_ns: int) -> int | None:
    folder = Path(path)
    if folder.is_dir():  # a diffusers folder
        config = folder / "unet" / "config.json"
        return json.loads(config.read_text()).get("in_channels") if config.is_file() else None
    if folder.suffix.lower() != ".safetensors":  # a pickle would have to be loaded whole: assume not
        return None
    from ..nodes.runtime.state_dict_files import open_state_dict  # reads the header only

    try:
        shape = open_state_dict(folder).shapes.get(UNET_CONV_IN)
    except Exception:
        return None
    return int(shape[1]) if shape is not None and len(shape) > 1 else None


# -- input images ----------------------------------------------------------------------------------------

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16")


def store_input_image(folders: Folders, image: Image.Image, prefix: str = "image") -> str:
    """Write `image` as a PNG under a new unique name in the input folder and return that name.

    `prefix` may name a subfolder ("a1111/init"); every part is reduced to safe characters and the
    result checked against the folder. The file appears complete or not at all."""
    parts = [_UNSAFE_CHARS.sub("_", part).strip("._") for part in str(prefix).replace("\\", "/").split("/")]
    parts = [p for p in parts if p] or ["image"]
    name = "/".join(parts) + f"_{secrets.token_hex(8)}.png"
    path = safe_path(folders.input_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path = safe_path(folders.input_dir, name)  # again, now that the subfolder exists
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA")
    write_png(path, image)
    return name


@dataclass
class PreparedInputs:
    init_name: str
    mask_name: str | None
    resized: bool  # the stored image is already width x height
    overlay: InpaintOverlay | None
    stored: list[str]  # input-folder names written


def prepare_img2img(folders: Folders, params: GenerationParams, prefix: str = "img2img") -> PreparedInputs:
    """Store `params.init_image` (and mask) in the input folder, doing in PIL what the nodes can't
    (a1111_images.py). `params` must be resolved."""
    if params.init_image is None:
        raise BadRequest("init_image", "img2img needs an init image")
    image = flatten(params.init_image)
    mask = inpaint_mask(params.mask, image.size, params) if params.mask is not None else None
    region = None
    if mask is not None and params.inpaint_full_res:
        region = crop_region(mask, params.inpaint_full_res_padding)
    if mask is None or (params.inpaint_full_res and region is None):
        # "only masked" with a blank mask is plain img2img in A1111 too
        resized = params.resize_mode == 2
        if resized:
            image = resize_image(2, image, params.width, params.height)
        name = store_input_image(folders, image, f"{prefix}/init")
        return PreparedInputs(name, None, resized, None, [name])
    image, latent_mask, overlay = inpaint_inputs(image, mask, region, params)
    init_name = store_input_image(folders, image, f"{prefix}/init")
    mask_name = store_input_image(folders, latent_mask, f"{prefix}/mask")
    return PreparedInputs(init_name, mask_name, True, overlay, [init_name, mask_name])


# -- whole requests --------------------------------------------------------------------------------------

@dataclass
class Plan:
    """Everything one request runs: a workflow per batch-count iteration and what to do afterwards."""

    params: GenerationParams  # resolved: ComfyUI names, concrete seed
    workflows: list[dict]
    inputs: PreparedInputs | None = None
    seeds: list[list[int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what was left out, for the user (A1111 warns too)

    @property
    def all_seeds(self) -> list[int]:
        return [seed for seeds in self.seeds for seed in seeds]

    def finish(self, folders: Folders, iteration: int, outputs: dict) -> list[Path]:
        """The image files a finished iteration wrote (its job's outputs), in order, post-processed."""
        paths = []
        for node_id in output_nodes(self.workflows[iteration]):
            for entry in (outputs.get(node_id) or {}).get("images", []):
                base = folders.temp_dir if entry.get("type") == "temp" else folders.output_dir
                subfolder = entry.get("subfolder") or ""
                path = safe_path(base, f"{subfolder}/{entry['filename']}" if subfolder else entry["filename"])
                if self.inputs is not None and self.inputs.overlay is not None:
                    postprocess_saved(path, self.inputs.overlay)
                paths.append(path)
        return paths


def with_prompt_loras(params: GenerationParams, folders: Folders | None, build) -> tuple[list[dict], list[str]]:
    """(the workflows `build(params)` makes from the prompt without its LoRA tags, each with a
    LoraLoader per tag after the checkpoint loader; warnings). The loaders are chained last, so every
    user of the checkpoint's MODEL and CLIP (hires and refiner passes too) goes through them. A tag
    naming a LoRA the folder lacks is left out with a warning, as A1111 generates without it.
    `params` keeps the tags: A1111 reports the prompt with them, and the infotext writes them back."""
    prompt, loras, missing = prompt_lora_tags(params.prompt, folders)
    # tags elsewhere are dropped from the text: the main prompt's LoRAs serve every pass
    others = {}
    for name in ("negative_prompt", "hr_prompt", "hr_negative_prompt"):
        try:
            others[name] = prompt_loras.extract(getattr(params, name))[0]
        except prompt_loras.LoraTagError as err:
            raise BadRequest(name, str(err)) from None
    workflows = build(params.replace(prompt=prompt, **others))
    for workflow in workflows:
        prompt_loras.add_lora_nodes(workflow, loras, folders or current_folders())
    warnings = [prompt_loras.not_found_message(missing, folders or current_folders())] if missing else []
    return workflows, warnings


def _plan(params: GenerationParams, folders: Folders | None, inputs: PreparedInputs | None, build) -> Plan:
    """The Plan of resolved `params` whose iteration i runs `build(params, i)`, prompt LoRAs added."""
    workflows, warnings = with_prompt_loras(params, folders, lambda p: [build(p, i) for i in range(p.n_iter)])
    return Plan(params, workflows, inputs, [iteration_seeds(params, i) for i in range(params.n_iter)], warnings)


def build_txt2img(params: GenerationParams, folders: Folders | None = None,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Plan:
    params = resolve(params, folders, max_pixels)
    return _plan(params, folders, None, txt2img_workflow)


def build_img2img(params: GenerationParams, folders: Folders, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  prefix: str = "img2img") -> Plan:
    """Resolve, store the input image(s) and build the workflows. The caller runs them and passes each
    job's outputs to Plan.finish."""
    params = resolve(params, folders, max_pixels)
    if params.init_image is None:
        raise BadRequest("init_images", "img2img needs an init image")
    inputs = prepare_img2img(folders, params, prefix)
    return _plan(params, folders, inputs, lambda p, i: img2img_workflow(p, inputs.init_name, inputs.mask_name, i,
                                                                        resized=inputs.resized))


def build_depth2img(params: GenerationParams, folders: Folders, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    controlnet: str | None = DEFAULT_CONTROLNET) -> Plan:
    """Resolve, store the init image at the generation size (resize modes 0-2 in PIL) and build the
    workflows; the SD 2 depth template when the checkpoint is a depth model."""
    params = resolve(params, folders, max_pixels)
    if params.init_image is None:
        raise BadRequest("init_image", "depth2img needs an init image")
    mode = params.resize_mode if params.resize_mode in (0, 1, 2) else 0
    image = resize_image(mode, flatten(params.init_image), params.width, params.height)
    name = store_input_image(folders, image, "depth2img/init")
    sd2_depth = is_depth_checkpoint(folders, params.checkpoint)
    return _plan(params, folders, None, lambda p, i: depth2img_workflow(p, name, i, controlnet=controlnet,
                                                                        sd2_depth=sd2_depth))
