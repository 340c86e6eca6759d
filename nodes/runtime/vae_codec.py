"""Pixels <-> latents with a VAE: IMAGE [B,H,W,C] in 0..1 <-> LATENT samples in UNet space.

Images go through the VAE one at a time, so a large batch costs no more memory than one image.
Encoding takes the mean of the latent distribution, so the same image always gives the same latent.
Each function takes an optional `check_interrupt` (it raises to stop), called before each image, each
tile and each of the VAE's resolution blocks: one decode of a large image is minutes on a CPU.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F

from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from .model_types import Vae

SCALE = 8  # pixels per latent pixel
CheckInterrupt = Callable[[], None] | None


def decode(vae: Vae, samples: torch.Tensor, check_interrupt: CheckInterrupt = None) -> torch.Tensor:
    """LATENT samples [B,4,h,w] -> IMAGE [B,8h,8w,3] on the CPU."""
    model = vae.vae
    images = []
    with torch.no_grad(), interruptible(model, check_interrupt):
        for latent in samples:
            latent = latent[None].to(model.device, model.dtype) / vae.scaling_factor
            pixels = model.decode(latent).sample.float()
            images.append((pixels / 2 + 0.5).clamp(0, 1).movedim(1, -1).cpu())
    return torch.cat(images)


def encode(vae: Vae, pixels: torch.Tensor, check_interrupt: CheckInterrupt = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> LATENT samples [B,4,H/8,W/8]; sizes not a multiple of 8 are center-cropped."""
    model = vae.vae
    pixels = crop_to_multiple(pixels)[..., :3]
    latents = []
    with torch.no_grad(), interruptible(model, check_interrupt):
        for image in pixels:
            image = image.movedim(-1, 0)[None].to(model.device, model.dtype) * 2 - 1
            latents.append(model.encode(image).latent_dist.mode().float() * vae.scaling_factor)
    return torch.cat(latents)


def encode_for_inpaint(vae: Vae, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int = 6,
                       check_interrupt: CheckInterrupt = None) -> dict:
    """ComfyUI's VAEEncodeForInpaint: grey out the masked pixels, encode, and set the mask (grown by
    `grow_mask_by` pixels so the seam blends) as the LATENT's noise_mask. For 9-channel inpainting
    models, whose extra input is exactly this greyed-out image."""
    height, width = pixels.shape[1], pixels.shape[2]
    mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=(height, width), mode="bilinear")
    pixels, mask = crop_to_multiple(pixels), crop_to_multiple(mask.movedim(1, -1)).movedim(-1, 1)
    hard = mask.round()
    if grow_mask_by > 0:
        kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by), device=hard.device)
        grown = F.conv2d(hard, kernel, padding=math.ceil((grow_mask_by - 1) / 2)).clamp(0, 1)
        grown = grown[..., :hard.shape[-2], :hard.shape[-1]]  # even kernels pad one pixel too many
    else:
        grown = hard
    keep = (1 - hard).movedim(1, -1)  # [B,H,W,1]
    greyed = (pixels[..., :3] - 0.5) * keep + 0.5
    return {"samples": encode(vae, greyed, check_interrupt), "noise_mask": grown.round()}


def decode_tiled(vae: Vae, samples: torch.Tensor, tile_size: int = 512, overlap: int = 64,
                 check_interrupt: CheckInterrupt = None) -> torch.Tensor:
    """LATENT samples -> IMAGE, decoding tile_size x tile_size pixel tiles that overlap by `overlap`
    pixels and are blended linearly across the overlap (diffusers' tiled decoder), so memory stays
    that of one tile whatever the image size."""
    model = vae.vae
    images = []
    with torch.no_grad(), _tiling(model, tile_size, overlap), interruptible(model, check_interrupt):
        for latent in samples:
            latent = latent[None].to(model.device, model.dtype) / vae.scaling_factor
            pixels = model.tiled_decode(latent).sample.float()
            images.append((pixels / 2 + 0.5).clamp(0, 1).movedim(1, -1).cpu())
    return torch.cat(images)


def encode_tiled(vae: Vae, pixels: torch.Tensor, tile_size: int = 512, overlap: int = 64,
                 check_interrupt: CheckInterrupt = None) -> torch.Tensor:
    """IMAGE -> LATENT samples, encoding overlapping tiles blended across the overlap."""
    model = vae.vae
    pixels = crop_to_multiple(pixels)[..., :3]
    latents = []
    with torch.no_grad(), _tiling(model, tile_size, overlap), interruptible(model, check_interrupt):
        for image in pixels:
            image = image.movedim(-1, 0)[None].to(model.device, model.dtype) * 2 - 1
            moments = model._tiled_encode(image)
            latents.append(DiagonalGaussianDistribution(moments).mode().float() * vae.scaling_factor)
    return torch.cat(latents)


@contextmanager
def interruptible(model, check_interrupt: CheckInterrupt):
    """While inside, `check_interrupt` runs before each pass through the VAE's encoder or decoder (once
    per image, or per tile when diffusers tiles) and before each of their resolution blocks. The model
    is shared: the hooks act only in the thread that entered."""
    if check_interrupt is None:
        yield
        return
    thread = threading.get_ident()

    def check(module, args) -> None:
        if threading.get_ident() == thread:
            check_interrupt()

    parts = [getattr(model, name, None) for name in ("encoder", "decoder")]
    modules = [part for part in parts if part is not None]
    for part in list(modules):
        modules += [*getattr(part, "down_blocks", ()), *getattr(part, "up_blocks", ())]
    hooks = [module.register_forward_pre_hook(check) for module in modules]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


# diffusers reads the tile geometry from attributes of the (shared, cached) model
_tiling_lock = threading.Lock()


@contextmanager
def _tiling(model, tile_size: int, overlap: int):
    tile_size = tile_size // SCALE * SCALE
    if tile_size < SCALE * 2:
        raise ValueError(f"tile_size must be at least {SCALE * 2} pixels, got {tile_size}")
    overlap = max(0, min(overlap, tile_size // 4))  # ComfyUI: at most a quarter of the tile
    names = ("tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")
    with _tiling_lock:
        saved = [getattr(model, name, None) for name in names]
        model.tile_sample_min_size = tile_size
        model.tile_latent_min_size = tile_size // SCALE
        model.tile_overlap_factor = overlap / tile_size
        try:
            yield
        finally:
            for name, value in zip(names, saved):
                setattr(model, name, value)


def crop_to_multiple(pixels: torch.Tensor) -> torch.Tensor:
    """Center-crop [B,H,W,C] to multiples of 8, as ComfyUI does before encoding."""
    height, width = pixels.shape[1] // SCALE * SCALE, pixels.shape[2] // SCALE * SCALE
    if (height, width) == tuple(pixels.shape[1:3]):
        return pixels
    top, left = (pixels.shape[1] % SCALE) // 2, (pixels.shape[2] % SCALE) // 2
    return pixels[:, top:top + height, left:left + width]
