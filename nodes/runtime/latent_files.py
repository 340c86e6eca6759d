"""`.latent` files: ComfyUI's SaveLatent / LoadLatent format.

A safetensors file with `latent_tensor` (the latents) and an empty `latent_format_version_0` marker,
and the workflow as JSON text in the metadata (`prompt`, and each extra_pnginfo entry such as
`workflow`). ComfyUI stores raw VAE latents; Inkwash's LATENT is in UNet space (times the VAE's
scaling factor), so files are written divided by SD's 0.18215 and read multiplied by it, the scale
ComfyUI itself assumes for files without the version marker. A file written here records the scale
it used, so it reads back exactly whatever the family.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

LATENT_KEY = "latent_tensor"
VERSION_KEY = "latent_format_version_0"
SCALE_METADATA = "inkwash.latent_scale"
SD_SCALE = 0.18215
EXTENSION = ".latent"


def to_bytes(samples: torch.Tensor, metadata: dict[str, str] | None = None) -> bytes:
    """The .latent file for LATENT samples."""
    tensors = {LATENT_KEY: (samples.float() / SD_SCALE).contiguous().cpu(), VERSION_KEY: torch.tensor([])}
    return safetensors_bytes(tensors, metadata={**(metadata or {}), SCALE_METADATA: repr(SD_SCALE)})


def workflow_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> dict[str, str]:
    """ComfyUI's metadata: the prompt and each extra_pnginfo entry as JSON text."""
    metadata = {"prompt": json.dumps(prompt) if prompt else ""}
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


def load(path: Path) -> dict:
    """The LATENT a .latent file holds. Files without the version marker (ComfyUI's first format) hold
    UNet-space latents already."""
    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path.name}: not a readable .latent file ({err})") from err
    if LATENT_KEY not in tensors:
        raise ValueError(f"{path.name}: not a .latent file (no {LATENT_KEY})")
    samples = tensors[LATENT_KEY].float()
    if VERSION_KEY in tensors:
        samples = samples * _recorded_scale(metadata)
    if samples.ndim != 4:
        raise ValueError(f"{path.name}: latent_tensor has shape {tuple(samples.shape)}, expected [B, C, h, w]")
    return {"samples": samples}


def _recorded_scale(metadata: dict[str, str]) -> float:
    try:
        scale = float(metadata.get(SCALE_METADATA, SD_SCALE))
    except ValueError:
        return SD_SCALE
    return scale if 0 < scale < 100 else SD_SCALE
