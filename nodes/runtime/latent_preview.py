"""Cheap previews while sampling: a fixed linear map from the 4 latent channels to RGB.

The factors are ComfyUI's `latent_rgb_factors` (comfy/latent_formats.py), fitted on the UNet-space
latents (VAE latents times the scaling factor) that the sampler works on.
"""
from __future__ import annotations

import torch
from PIL import Image

from .model_types import Family

_SD_FACTORS = [[0.3512, 0.2297, 0.3227],
               [0.3250, 0.4974, 0.2350],
               [-0.2829, 0.1762, 0.2721],
               [-0.2120, -0.2616, -0.7177]]
_SD_BIAS = [0.0, 0.0, 0.0]
_XL_FACTORS = [[0.3651, 0.4232, 0.4341],
               [-0.2533, -0.0042, 0.1068],
               [0.1076, 0.1111, -0.0362],
               [-0.3165, -0.2492, -0.2188]]
_XL_BIAS = [0.1084, -0.0175, -0.0011]

MAX_SIZE = 512  # longest side of a preview, in pixels


def preview_image(latent: torch.Tensor, family: Family) -> Image.Image:
    """One latent [4,h,w] (or [1,4,h,w]) as a small RGB image, one pixel per latent pixel."""
    latent = latent.reshape(latent.shape[-3:]).detach().float().cpu()
    factors, bias = (_XL_FACTORS, _XL_BIAS) if family.is_xl else (_SD_FACTORS, _SD_BIAS)
    rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(factors)) + torch.tensor(bias)
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    image.thumbnail((MAX_SIZE, MAX_SIZE))
    return image
