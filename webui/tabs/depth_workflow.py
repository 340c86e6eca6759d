"""depth2img: the tab's parameters -> workflows/depth2img.json (a depth ControlNet) or, for a 5-channel
SD 2 depth checkpoint, workflows/depth2img_sd2.json (the depth map goes into the UNet through
ConditioningSetDepth). Both preview the computed depth map in node 15.

generation.py builds txt2img and img2img; depth2img is patched here the same way, on its own template.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

from PIL import Image

from ...nodes.folders import Folders
from ..generation import (WORKFLOWS_DIR, BadRequest, GenerationParams, Plan, add_clip_skip, flatten, iteration_seeds,
                          resize_image, resolve, store_input_image, with_prompt_loras)
from ..generation_passes import add_passes

DEFAULT_CONTROLNET = "inkwash-demo-depth.safetensors"
DEPTH_PREVIEW_NODE = "15"
UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


@lru_cache(maxsize=None)
def _template(name: str) -> str:
    return (WORKFLOWS_DIR / f"{name}.json").read_text()


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
    from ...nodes.runtime.state_dict_files import open_state_dict  # reads the header only

    try:
        shape = open_state_dict(folder).shapes.get(UNET_CONV_IN)
    except Exception:
        return None
    return int(shape[1]) if shape is not None and len(shape) > 1 else None


def depth2img_workflow(params: GenerationParams, init_image_name: str, iteration: int = 0, *,
                       controlnet: str | None = DEFAULT_CONTROLNET, sd2_depth: bool = False) -> dict:
    """One batch-count iteration on an input image already at width x height. `params` resolved."""
    workflow = json.loads(_template("depth2img_sd2" if sd2_depth else "depth2img"))
    seeds = iteration_seeds(params, iteration)
    workflow["4"]["inputs"]["ckpt_name"] = params.checkpoint
    workflow["6"]["inputs"]["text"] = params.prompt
    workflow["7"]["inputs"]["text"] = params.negative_prompt
    workflow["3"]["inputs"].update(seed=seeds[0], steps=params.steps, cfg=params.cfg_scale,
                                   sampler_name=params.sampler_name, scheduler=params.scheduler,
                                   denoise=params.denoising_strength)
    workflow["9"]["inputs"]["filename_prefix"] = params.filename_prefix
    workflow["10"]["inputs"]["image"] = init_image_name
    # the estimator's working size: the short side, in its steps of 64
    workflow["12"]["inputs"]["resolution"] = max(64, round(min(params.width, params.height) / 64) * 64)
    if not sd2_depth:
        if not controlnet:
            raise BadRequest("controlnet", "depth2img needs a depth ControlNet in models/controlnet")
        workflow["13"]["inputs"]["control_net_name"] = controlnet
    for index, seed in enumerate(seeds[1:], start=1):  # one init image: a branch per batch image
        sampler, decoder, saver = (copy.deepcopy(workflow[n]) for n in ("3", "8", "9"))
        sampler["inputs"]["seed"] = seed
        decoder["inputs"]["samples"] = [f"3_{index}", 0]
        saver["inputs"]["images"] = [f"8_{index}", 0]
        workflow[f"3_{index}"], workflow[f"8_{index}"], workflow[f"9_{index}"] = sampler, decoder, saver
    add_clip_skip(workflow, params.clip_skip)
    add_passes(workflow, params, ["3"] + [f"3_{index}" for index in range(1, len(seeds))])  # the VAE choice
    return workflow


def build_depth2img(params: GenerationParams, folders: Folders, max_pixels: int | None,
                    controlnet: str | None = DEFAULT_CONTROLNET) -> Plan:
    """Resolve, store the init image at the generation size (resize modes 0-2 in PIL) and build the
    workflows; the SD 2 depth template when the checkpoint is a depth model."""
    params = resolve(params, folders, max_pixels)
    if not isinstance(params.init_image, Image.Image):
        raise BadRequest("init_image", "depth2img needs an init image")
    mode = params.resize_mode if params.resize_mode in (0, 1, 2) else 0
    image = resize_image(mode, flatten(params.init_image), params.width, params.height)
    name = store_input_image(folders, image, "depth2img/init")
    sd2_depth = is_depth_checkpoint(folders, params.checkpoint)
    workflows = with_prompt_loras(params, folders, lambda p: [
        depth2img_workflow(p, name, i, controlnet=controlnet, sd2_depth=sd2_depth) for i in range(p.n_iter)])
    return Plan(params, workflows, None, [iteration_seeds(params, i) for i in range(params.n_iter)])
