"""Stage 6: the bundled files, written with the engine's savers and checked with its loaders.

    <models>/checkpoints/inkwash-demo.safetensors      UNet + CLIP + VAE, SD 1.x single-file layout
    <models>/controlnet/inkwash-demo-canny.safetensors ControlNets, original layout
    <models>/controlnet/inkwash-demo-depth.safetensors
    <models>/annotators/inkwash-demo-depth.safetensors (written by the depth stage)

Weights are stored in fp16 (half the size; the loaders cast to the dtype they load in). Each file
is then loaded back through load_checkpoint / load_controlnet and generates a sample, so a file
that the studio could not use never ships.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from ..nodes.runtime.checkpoint_load import load_checkpoint, load_controlnet
from ..nodes.runtime.checkpoint_save import save_checkpoint, save_controlnet
from ..nodes.runtime.model_types import ControlNet
from ..nodes.runtime import demo_depth
from . import train_controlnet, train_depth, train_samples, train_unet, train_vae, world
from .train_common import Settings, StageDir, save_grid, to_uint8

NAME = "assemble"
CHECKPOINT = Path("checkpoints") / "inkwash-demo.safetensors"
CONTROLNETS = {"controlnet_canny": Path("controlnet") / "inkwash-demo-canny.safetensors",
               "controlnet_depth": Path("controlnet") / "inkwash-demo-depth.safetensors"}
SIZE_LIMIT_MB = 50.0


def _half(module):
    return copy.deepcopy(module).half()


def _metadata(settings: Settings, stages: list[str]) -> dict:
    training = {name: StageDir(settings, name).done_info() for name in stages}
    return {"modelspec.title": "Inkwash demo", "modelspec.resolution": "128x128",
            "modelspec.description": "A small SD 1.x-layout model trained on Inkwash's procedural world of "
                                     "coloured shapes (demo/world.py).",
            "inkwash.training": json.dumps(training)}


def run(settings: Settings) -> bool:
    stage = StageDir(settings, NAME)
    models = Path(settings.models)
    vae = train_vae.load(settings)
    unet, text_encoder = train_unet.load(settings)
    model, clip, vae_value = train_samples.runtime(_half(unet), _half(text_encoder), _half(vae))
    files = [save_checkpoint(models / CHECKPOINT, model, clip, vae_value,
                             metadata=_metadata(settings, [train_vae.NAME, train_vae.DECODER, train_unet.NAME,
                                                           train_unet.LAYOUT, train_unet.CORNERS]))]
    for name, relative in CONTROLNETS.items():
        control_net = ControlNet(_half(train_controlnet.load(settings, name)), train_samples.family(), name=name)
        files.append(save_controlnet(models / relative, control_net, metadata=_metadata(settings, [name])))
    files.append(train_depth.weights_file(settings))

    check = _check(settings, models, stage)
    sizes = {str(f.relative_to(models)): round(f.stat().st_size / 1e6, 2) for f in files}
    total = sum(sizes.values())
    print(f"[{NAME}] wrote {', '.join(f'{k} ({v} MB)' for k, v in sizes.items())}: {total:.1f} MB", flush=True)
    if total > SIZE_LIMIT_MB:
        raise RuntimeError(f"the bundled models take {total:.1f} MB, over the {SIZE_LIMIT_MB:g} MB limit")
    stage.finish({"files_mb": sizes, "total_mb": round(total, 2), **check})
    return True


def _check(settings: Settings, models: Path, stage: StageDir) -> dict:
    """Reload every file through the studio's loaders and generate with it; the grid shows txt2img,
    then canny hint and result, then the estimated depth and the depth ControlNet's result."""
    model, clip, vae = load_checkpoint(models / CHECKPOINT, device="cpu", dtype=torch.float32)
    scenes = train_samples.sample_scenes()
    prompts = [world.prompt_for(s) for s in scenes]
    rows = [[world.render(s)[0] for s in scenes], to_uint8(train_samples.txt2img(model, clip, vae, prompts))]

    rendered = np.stack([world.render(s)[0] for s in scenes])
    estimate = demo_depth.load(train_depth.weights_file(settings))
    estimated = np.stack([estimate(image, 128) for image in rendered]).astype(np.float32) / 255.0
    hints = {"controlnet_canny": train_controlnet.canny_hints(rendered, None),
             "controlnet_depth": train_controlnet.depth_hints(rendered, estimated)}
    for name, relative in CONTROLNETS.items():
        control_net = load_controlnet(models / relative, device="cpu", dtype=torch.float32)
        images = train_samples.txt2img(model, clip, vae, prompts, control_net=control_net, hints=hints[name])
        rows += [to_uint8(hints[name]), to_uint8(images)]
    save_grid([im for row in rows for im in row], stage.file("check.png"), columns=len(scenes))
    return {"checked": ["load_checkpoint", "load_controlnet", "demo_depth.load"],
            "unet_parameters": sum(p.numel() for p in model.unet.parameters())}
