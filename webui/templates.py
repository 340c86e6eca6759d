"""The shipped workflow templates (workflows/*.json) the generation layer patches, and a name for each
node id they have, one table per template.

The templates share their ids where they share a role (the sampler is "3" in all of them), as
ComfyUI's default workflow numbers them; tests/test_generation.py checks every table against its file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from ..nodes.folders import REPO_ROOT

WORKFLOWS_DIR = REPO_ROOT / "workflows"


@dataclass(frozen=True)
class TemplateNodes:
    """The node ids of one template by role; None where the template has no such node."""

    sampler: str = "3"  # KSampler
    checkpoint: str = "4"  # CheckpointLoaderSimple
    positive: str = "6"  # CLIPTextEncode
    negative: str = "7"  # CLIPTextEncode
    decode: str = "8"  # VAEDecode
    save: str = "9"  # SaveImage
    empty_latent: str | None = None  # EmptyLatentImage
    load_image: str | None = None  # LoadImage
    encode: str | None = None  # VAEEncode
    noise_mask: str | None = None  # SetLatentNoiseMask
    preprocessor: str | None = None  # the control image's annotator (depth estimator, Canny)
    controlnet_loader: str | None = None  # ControlNetLoader
    controlnet_apply: str | None = None  # ControlNetApplyAdvanced
    depth_conditioning: str | None = None  # ConditioningSetDepth
    control_preview: str | None = None  # PreviewImage of the control image (the depth map)


TXT2IMG = TemplateNodes(empty_latent="5")
IMG2IMG = TemplateNodes(load_image="10", encode="11")
INPAINT = TemplateNodes(load_image="10", encode="11", noise_mask="12")
DEPTH2IMG = TemplateNodes(load_image="10", encode="11", preprocessor="12", controlnet_loader="13",
                          controlnet_apply="14", control_preview="15")
DEPTH2IMG_SD2 = TemplateNodes(load_image="10", encode="11", preprocessor="12", depth_conditioning="14",
                              control_preview="15")
CONTROLNET_CANNY = TemplateNodes(empty_latent="5", load_image="10", preprocessor="12", controlnet_loader="13",
                                 controlnet_apply="14", control_preview="15")
NODES = {"txt2img": TXT2IMG, "img2img": IMG2IMG, "inpaint": INPAINT, "depth2img": DEPTH2IMG,
         "depth2img_sd2": DEPTH2IMG_SD2, "controlnet_canny": CONTROLNET_CANNY}

# The classes each role's node may have, for the check of the tables against the files.
CLASS_TYPES = {
    "sampler": ("KSampler",), "checkpoint": ("CheckpointLoaderSimple",), "positive": ("CLIPTextEncode",),
    "negative": ("CLIPTextEncode",), "decode": ("VAEDecode",), "save": ("SaveImage",),
    "empty_latent": ("EmptyLatentImage",), "load_image": ("LoadImage",), "encode": ("VAEEncode",),
    "noise_mask": ("SetLatentNoiseMask",), "preprocessor": ("MiDaS-DepthMapPreprocessor", "Canny"),
    "controlnet_loader": ("ControlNetLoader",), "controlnet_apply": ("ControlNetApplyAdvanced",),
    "depth_conditioning": ("ConditioningSetDepth",), "control_preview": ("PreviewImage",),
}

# Nodes the generation layer adds to a template (generation_passes.py names those of its passes).
CLIP_SKIP = "20"  # CLIPSetLastLayer
IMAGE_SCALE = "21"  # ImageScale: resize modes 0 and 1 in the graph
LATENT_UPSCALE = "22"  # LatentUpscale: resize mode 3
LOAD_MASK = "23"  # LoadImageMask
VARIATION_SEED = "50"  # VariationSeed before the sampler "3" as "50_3" ("50_3_1", "50_17", ...)


@cache
def _load(name: str) -> str:
    return (WORKFLOWS_DIR / f"{name}.json").read_text()


def template(name: str) -> dict:
    """A fresh copy of workflows/<name>.json."""
    return json.loads(_load(name))
