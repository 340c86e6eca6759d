"""LATENT values: empty latents, resizing (ComfyUI's LatentUpscale and LatentUpscaleBy), noise masks.

LATENT is `{"samples": [B,4,H/8,W/8], "noise_mask"?: [B,1,H,W]}` in UNet space (VAE latent times the
VAE's scaling factor).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .images import center_crop, per_item

CHANNELS = 4  # SD1, SD2 and SDXL latents
MAX_ELEMENTS = 2 ** 28  # 1 GiB of float32 latents; far beyond anything a UNet can denoise in one go

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


def size_error(width: int, height: int, batch_size: int) -> str | None:
    """Why a latent of this size can't be made, or None."""
    elements = batch_size * CHANNELS * (height // 8) * (width // 8)
    if elements > MAX_ELEMENTS:
        return (f"{batch_size} x {width}x{height} would need {elements * 4 / 2 ** 30:.1f} GiB of latents; "
                f"the limit is {MAX_ELEMENTS * 4 / 2 ** 30:.0f} GiB (use a smaller size or batch)")
    return None


def empty(width: int, height: int, batch_size: int = 1) -> dict:
    """Zeros for a batch of width x height images (sizes round down to multiples of 8)."""
    error = size_error(width, height, batch_size)
    if error:
        raise ValueError(error)
    return {"samples": torch.zeros(batch_size, CHANNELS, height // 8, width // 8)}


def upscale(latent: dict, method: str, width: int, height: int, crop: str,
            check_interrupt: Callable[[], None] | None = None) -> dict:
    """ComfyUI's LatentUpscale: resize to width x height pixels (a 0 keeps the aspect ratio, both 0 keep
    the latent; sizes are at least 64); "center" crops to the new aspect ratio first. `check_interrupt`
    is called before each latent of the batch."""
    if method not in UPSCALE_METHODS:
        raise ValueError(f"upscale_method must be one of {', '.join(UPSCALE_METHODS)}, got {method!r}")
    if crop not in CROP_METHODS:
        raise ValueError(f"crop must be one of {', '.join(CROP_METHODS)}, got {crop!r}")
    if width == 0 and height == 0:
        return latent
    samples = latent["samples"]
    old_h, old_w = samples.shape[-2:]
    if width == 0:
        height = max(64, height)
        width = max(64, round(old_w * height / old_h))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(old_h * width / old_w))
    else:
        width, height = max(64, width), max(64, height)
    error = size_error(width, height, samples.shape[0])
    if error:
        raise ValueError(error)
    if crop == "center":
        samples = center_crop(samples, width / height)
    return {**latent, "samples": _resized(samples, method, height // 8, width // 8, check_interrupt)}


def upscale_by(latent: dict, method: str, scale_by: float, check_interrupt: Callable[[], None] | None = None) -> dict:
    """ComfyUI's LatentUpscaleBy: both sides times `scale_by`, rounded to whole latent pixels.
    `check_interrupt` is called before each latent of the batch."""
    if method not in UPSCALE_METHODS:
        raise ValueError(f"upscale_method must be one of {', '.join(UPSCALE_METHODS)}, got {method!r}")
    samples = latent["samples"]
    height, width = (max(1, round(side * scale_by)) for side in samples.shape[-2:])
    error = size_error(width * 8, height * 8, samples.shape[0])
    if error:
        raise ValueError(error)
    return {**latent, "samples": _resized(samples, method, height, width, check_interrupt)}


def _resized(samples: torch.Tensor, method: str, height: int, width: int, check_interrupt) -> torch.Tensor:
    if method == "bislerp":
        return per_item(samples, lambda batch: bislerp(batch, height, width), check_interrupt)
    return per_item(samples, lambda batch: F.interpolate(batch, size=(height, width), mode=method), check_interrupt)


def set_noise_mask(latent: dict, mask: torch.Tensor) -> dict:
    """ComfyUI's SetLatentNoiseMask: only where mask is 1 gets denoised."""
    return {**latent, "noise_mask": mask.reshape(-1, 1, *mask.shape[-2:])}


def bislerp(samples: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize that slerps between neighbouring latent vectors (across channels) instead of
    averaging them, which keeps their norm: ComfyUI's "bislerp". Width first, then height."""
    out = _slerp_resize(samples.float(), width, dim=-1)
    return _slerp_resize(out, height, dim=-2).to(samples.dtype)


def _slerp_resize(samples: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    old = samples.shape[dim]
    # source positions of the new pixels (half-pixel centres, as bilinear interpolation)
    position = ((torch.arange(length, device=samples.device) + 0.5) * old / length - 0.5).clamp(0, old - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=old - 1)
    ratio = position - low
    a = samples.index_select(dim, low).movedim(1, -1)
    b = samples.index_select(dim, high).movedim(1, -1)
    shape = [1] * a.ndim
    shape[dim - 1] = length  # ratio runs along the resized axis, one further left once channels are last
    return _slerp(a, b, ratio.reshape(shape)).movedim(-1, 1)


def _slerp(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the vectors on the last axis, with linearly interpolated length."""
    a_norm, b_norm = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    a_unit = torch.where(a_norm > 0, a / a_norm, torch.zeros_like(a))
    b_unit = torch.where(b_norm > 0, b / b_norm, torch.zeros_like(b))
    dot = (a_unit * b_unit).sum(-1, keepdim=True)
    omega = torch.acos(dot.clamp(-1, 1))
    sin_omega = torch.sin(omega)
    result = (torch.sin((1 - ratio) * omega) * a_unit + torch.sin(ratio * omega) * b_unit) / sin_omega
    result = result * (a_norm * (1 - ratio) + b_norm * ratio)
    linear = a * (1 - ratio) + b * ratio
    # (nearly) parallel or opposite vectors: slerp is undefined there, fall back as ComfyUI does
    result = torch.where(dot > 1 - 1e-5, a, result)
    return torch.where(dot < 1e-5 - 1, linear, result)
