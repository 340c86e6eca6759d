"""Writing models back in the original single-file layout that every SD tool reads.

Keys are those of the SD releases: `model.diffusion_model.*`, `first_stage_model.*`, and
`cond_stage_model.transformer.*` (SD1), `cond_stage_model.model.*` (SD2, OpenCLIP layout) or
`conditioner.embedders.{0,1}.*` (SDXL). A v-prediction model gets ComfyUI's `v_pred` marker (and
`ztsnr` for zero-terminal-SNR schedules), and the header records `modelspec.prediction_type` plus the
exact diffusers configs, so Inkwash reloads any architecture it wrote, tiny ones included.

SD2 keeps OpenCLIP's last block out of the model (it conditions on the penultimate layer). A model
loaded from a file writes back the block and text projection it came with (`checkpoint_extras`);
a model built from scratch or from a diffusers folder has none, and gets an identity block (zero
output projections, so it passes its input through) and an identity text projection: tools that run
every block and tools that stop at the penultimate one then compute the same embeddings.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint_load import EXTRAS
from .ldm_keys import (TEXT_ENCODERS, clip_l_to_ldm, controlnet_to_ldm, open_clip_identity_block,
                       open_clip_to_ldm, unet_to_ldm, vae_to_ldm)
from .model_configs import CONFIGS_METADATA
from .model_detect import CONTROLNET, PREDICTION_METADATA, UNET, V_PRED_KEY, VAE, ZTSNR_KEY
from .model_types import SD2, ControlNet, DiffusionModel, TextEncoder, Vae
from .state_dict_files import write_safetensors


def save_checkpoint(path: str | Path, model: DiffusionModel, clip: TextEncoder, vae: Vae,
                    metadata: dict | None = None) -> Path:
    """Write one .safetensors file (atomically). `metadata` values that are not strings are stored as JSON."""
    family = model.family
    layouts = TEXT_ENCODERS[family.name]
    if clip.family.name != family.name or len(clip.encoders) != len(layouts):
        raise ValueError(f"cannot save a {clip.family.name} CLIP with a {family.name} MODEL")
    tensors: dict[str, torch.Tensor] = {}
    _put(tensors, UNET, unet_to_ldm(model.unet.state_dict(), model.unet.config), model.unet)
    _put(tensors, VAE, vae_to_ldm(vae.vae.state_dict(), vae.vae.config), vae.vae)
    configs = {"unet": _public(model.unet.config), "vae": _public(vae.vae.config)}
    for encoder, (prefix, layout, name) in zip(clip.encoders, layouts):
        if layout == "open_clip":
            weights = open_clip_to_ldm(encoder.state_dict())
            if family.name == SD2:
                weights |= _sd2_final_block(encoder, weights)
        else:
            weights = clip_l_to_ldm(encoder.state_dict())
        _put(tensors, prefix, weights, encoder)
        configs[name] = encoder.config.to_diff_dict()
    v_prediction = family.prediction_type == "v_prediction"
    if v_prediction:
        tensors[V_PRED_KEY] = torch.tensor([])
    if model.scheduler_config.get("rescale_betas_zero_snr"):
        tensors[ZTSNR_KEY] = torch.tensor([])
    header = {PREDICTION_METADATA: "v" if v_prediction else "epsilon", CONFIGS_METADATA: json.dumps(configs)}
    write_safetensors(path, tensors, _with_user_metadata(header, metadata))
    return Path(path)


def save_controlnet(path: str | Path, control_net: ControlNet, metadata: dict | None = None) -> Path:
    """Write a ControlNet in the original layout (`control_model.*`), as the released .pth files."""
    model = control_net.model
    tensors: dict[str, torch.Tensor] = {}
    _put(tensors, CONTROLNET, controlnet_to_ldm(model.state_dict(), model.config), model)
    header = {CONFIGS_METADATA: json.dumps({"controlnet": _public(model.config)})}
    write_safetensors(path, tensors, _with_user_metadata(header, metadata))
    return Path(path)


def _public(config) -> dict:
    """A diffusers config without its bookkeeping (`_name_or_path` and the like)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def _put(tensors: dict, prefix: str, weights: dict, module) -> None:
    for key, value in {**getattr(module, EXTRAS, {}), **weights}.items():
        tensors[prefix + key] = value.detach().to("cpu").contiguous()


def _sd2_final_block(encoder, weights: dict) -> dict:
    """The identity block and projection that a from-scratch SD2 text encoder lacks (see above)."""
    extras = getattr(encoder, EXTRAS, {})
    config = encoder.config
    dtype = weights["token_embedding.weight"].dtype
    added = {}
    last = config.num_hidden_layers
    if not any(k.startswith(f"transformer.resblocks.{last}.") for k in extras):
        added |= open_clip_identity_block(last, config.hidden_size, config.intermediate_size, dtype)
    if "text_projection" not in extras and "text_projection" not in weights:
        added["text_projection"] = torch.eye(config.hidden_size, dtype=dtype)
    return added


def _with_user_metadata(header: dict, metadata: dict | None) -> dict:
    for key, value in (metadata or {}).items():
        header[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return header
