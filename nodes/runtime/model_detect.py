"""Which Stable Diffusion family a weight file holds, from its key names and shapes.

Works on `{key: shape}` (a safetensors header is enough) in the original single-file layout:
UNet under `model.diffusion_model.`, text encoders under `cond_stage_model.*` (SD1: CLIP-L in the
transformers layout; SD2: OpenCLIP) or `conditioner.embedders.*` (SDXL), ControlNets under
`control_model.` or in diffusers' layout. The text encoders tell the families apart because their
layout is fixed, whatever the widths; ControlNets, which have none, are told apart by context width.
Functions take `{key: shape}` or `{key: tensor}`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import yaml

from .model_types import SD1, SD2, SDXL, SDXL_REFINER, Family

UNET = "model.diffusion_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_CLIP = "cond_stage_model.model."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."
REFINER_CLIP_G = "conditioner.embedders.0.model."
CONTROLNET = "control_model."
VAE = "first_stage_model."

CLIP_L_PROBE = "text_model.embeddings.token_embedding.weight"
OPEN_CLIP_PROBE = "token_embedding.weight"

# ComfyUI's markers for v-prediction and zero-terminal-SNR models: empty tensors with these names
V_PRED_KEY, ZTSNR_KEY = "v_pred", "ztsnr"
PREDICTION_METADATA = "modelspec.prediction_type"

KIND_BY_IN_CHANNELS = {4: "base", 9: "inpaint", 5: "depth"}

Shapes = Mapping[str, Sequence[int]]


class UnknownModel(ValueError):
    """Weights of an architecture this runtime does not load."""


def as_shapes(state_dict: Mapping) -> Shapes:
    shapes = getattr(state_dict, "shapes", None)  # a StateDict file knows them without reading
    if shapes is not None:
        return shapes
    return {k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in state_dict.items()}


def detect_family(state_dict: Mapping) -> Family:
    """The family and UNet kind of a full checkpoint. The prediction type is left at epsilon:
    see `prediction_hint` and `is_v_prediction`."""
    shapes = as_shapes(state_dict)
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        raise UnknownModel(f"no Stable Diffusion UNet ({UNET}*) in it; it has keys like {_sample(shapes)}")
    kind = KIND_BY_IN_CHANNELS.get(conv_in[1])
    if kind is None:
        what = " (InstructPix2Pix?)" if conv_in[1] == 8 else ""
        raise UnknownModel(f"its UNet takes {conv_in[1]} input channels{what}; supported are 4 (base), "
                           "9 (inpainting) and 5 (depth)")
    if SDXL_CLIP_G + OPEN_CLIP_PROBE in shapes:
        return Family(SDXL, kind)
    if REFINER_CLIP_G + OPEN_CLIP_PROBE in shapes:
        return Family(SDXL_REFINER, kind)
    if UNET + "label_emb.0.0.weight" in shapes:
        raise UnknownModel("an SDXL-style UNet without SDXL's text encoders (conditioner.embedders.*)")
    if SD2_CLIP + OPEN_CLIP_PROBE in shapes:
        return Family(SD2, kind)
    if SD1_CLIP + CLIP_L_PROBE in shapes:
        return Family(SD1, kind)
    context = _context_dim(shapes, UNET)
    if context in (768, 1024):
        raise UnknownModel("a UNet without its text encoder (no cond_stage_model.* keys)")
    raise UnknownModel(f"no text encoder and an unknown context width {context}")


def is_controlnet(state_dict: Mapping) -> bool:
    shapes = as_shapes(state_dict)
    return (CONTROLNET + "input_hint_block.0.weight" in shapes
            or "controlnet_cond_embedding.conv_in.weight" in shapes
            or ("input_hint_block.0.weight" in shapes and "time_embed.0.weight" in shapes))


def detect_controlnet(state_dict: Mapping) -> Family:
    """SD1 or SD2 ControlNet, by context width (768 / 1024), else by projection: SD2 projects
    linearly into its transformers, SD1 with 1x1 convolutions."""
    shapes = as_shapes(state_dict)
    if not is_controlnet(shapes):
        raise UnknownModel(f"not a ControlNet; it has keys like {_sample(shapes)}")
    if any(k.endswith(("label_emb.0.0.weight", "add_embedding.linear_1.weight")) for k in shapes):
        return Family(SDXL)
    context = _context_dim(shapes, "")
    linear = any(len(s) == 2 for k, s in shapes.items() if k.endswith("proj_in.weight"))
    return Family(SD2 if context == 1024 or (context != 768 and linear) else SD1)


def prediction_hint(state_dict: Mapping, metadata: Mapping[str, str], path: Path | None = None) -> str | None:
    """What the file (or the A1111-style `<name>.yaml` beside it) says about its prediction type:
    "v_prediction", "epsilon" or None when it says nothing."""
    if path is not None:
        from_yaml = _yaml_parameterization(Path(path).with_suffix(".yaml"))
        if from_yaml is not None:
            return "v_prediction" if from_yaml == "v" else "epsilon"
    if V_PRED_KEY in state_dict:
        return "v_prediction"
    declared = str(metadata.get(PREDICTION_METADATA, "")).lower()
    if declared in ("v", "v_prediction", "v-prediction", "velocity"):
        return "v_prediction"
    if declared in ("epsilon", "eps"):
        return "epsilon"
    return None


def zero_terminal_snr(state_dict: Mapping) -> bool:
    return ZTSNR_KEY in state_dict


@torch.no_grad()
def is_v_prediction(unet) -> bool:
    """A1111's test for SD2: near t=T a v-prediction UNet's output on a flat 0.5 input sits well
    below the input, an epsilon one does not."""
    param = next(unet.parameters())
    x = torch.full((1, 4, 8, 8), 0.5, dtype=param.dtype, device=param.device)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=param.dtype, device=param.device)
    out = unet(x, torch.tensor([999], device=param.device), encoder_hidden_states=context).sample
    return (out.float() - x.float()).mean().item() < -1


def _yaml_parameterization(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "parameterization" in node:
                return str(node["parameterization"]).lower()
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _context_dim(shapes: Shapes, prefix: str) -> int | None:
    for key, shape in shapes.items():
        if key.startswith(prefix) and key.endswith("attn2.to_k.weight"):
            return int(shape[1])
    return None


def _sample(shapes: Shapes, count: int = 3) -> str:
    keys = list(shapes)[:count]
    return ", ".join(keys) if keys else "(none)"
