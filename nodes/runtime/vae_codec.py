"""Pixels <-> latents with a VAE: IMAGE [B,H,W,C] in 0..1 <-> LATENT samples in UNet space.

Images go through the VAE one at a time, so a large batch costs no more memory than one image.
Encoding takes the mean of the latent distribution, so the same image always gives the same latent.

`decode` and `encode` go tile by tile on their own when an estimate of the activation memory says the
whole image will not fit in the device's free memory, or when the whole attempt runs out of memory
(retried once, tiled). A half-precision VAE whose output is NaN or infinite is moved to bf16 or fp32
(devices.half_fallback_dtype) for good and the image redone.
Each function takes an optional `check_interrupt` (it raises to stop), called before each image, each
tile and each of the VAE's resolution blocks: one decode of a large image is minutes on a CPU.
"""
from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F

from ..out_of_memory import is_out_of_memory
from . import devices, memory_manager
from .model_types import Vae

log = logging.getLogger(__name__)

SCALE = 8  # pixels per latent pixel
AUTO_TILE, AUTO_OVERLAP = 512, 128  # pixels; ComfyUI's retry after an out-of-memory error (64 / 16 latent)
MIN_AUTO_TILE = 128
# Tensors of the widest layer at a resolution alive at once (input, norm, conv out, residual, upsample),
# measured on the CPU for SD's VAE at ~4.5 x the widest layer.
ALIVE_ACTIVATIONS = 5
CheckInterrupt = Callable[[], None] | None


def decode(vae: Vae, samples: torch.Tensor, check_interrupt: CheckInterrupt = None) -> torch.Tensor:
    """LATENT samples [B,4,h,w] -> IMAGE [B,8h,8w,3] on the CPU."""
    model = vae.vae
    images = []
    activation = activation_bytes(vae, samples.shape[-2:], "decode")
    with memory_manager.using(model, activation) as device, torch.no_grad(), \
            interruptible(model, check_interrupt):
        for latent in samples:
            def whole():
                return model.decode(_vae_input(vae, latent[None], device) / vae.scaling_factor).sample

            def tiled(tile, overlap):
                z = _vae_input(vae, latent[None], device) / vae.scaling_factor
                return _blend_tiles(lambda part: model.decode(part).sample, z, tile // SCALE, overlap // SCALE, SCALE)

            pixels = _finite(vae, "decode", lambda: _fitting(vae, "decode", device, latent.shape[-2:], whole, tiled))
            images.append((pixels.float() / 2 + 0.5).clamp(0, 1).movedim(1, -1).cpu())
    return torch.cat(images)


def encode(vae: Vae, pixels: torch.Tensor, check_interrupt: CheckInterrupt = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> LATENT samples [B,4,H/8,W/8]; sizes not a multiple of 8 are center-cropped."""
    model = vae.vae
    pixels = crop_to_multiple(pixels)[..., :3]
    latents = []
    size = (pixels.shape[1] // SCALE, pixels.shape[2] // SCALE)
    with memory_manager.using(model, activation_bytes(vae, size, "encode")) as device, torch.no_grad(), \
            interruptible(model, check_interrupt):
        for image in pixels:
            def whole():
                return model.encode(_vae_input(vae, _pixels_in(image), device)).latent_dist.mode()

            def tiled(tile, overlap):
                return _blend_tiles(lambda x: model.encode(x).latent_dist.mode(),
                                    _vae_input(vae, _pixels_in(image), device), tile, overlap, 1 / SCALE)

            mean = _finite(vae, "encode", lambda: _fitting(vae, "encode", device, size, whole, tiled))
            latents.append(mean.float() * vae.scaling_factor)
    return torch.cat(latents)


def activation_bytes(vae: Vae, latent_size: tuple[int, int], direction: str = "decode") -> int:
    """Estimated peak activation memory of decoding (or encoding) one latent of `latent_size` (h, w)
    whole: the widest layer at each resolution the VAE passes through, times the tensors alive at
    once, at the VAE's dtype; plus the mid-block attention matrix where SDPA may fall back to the
    plain (quadratic) kernel, i.e. off CUDA."""
    model = vae.vae
    height, width = latent_size
    widths = list(model.config.block_out_channels)
    if direction == "decode":
        widths.reverse()
    levels = len(widths)
    itemsize = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 4
    peak = 0
    for level, channels in enumerate(widths):
        # decoder level 0 is the latent's resolution; the encoder's level 0 is the image's
        step = level if direction == "decode" else levels - 1 - level
        pixels = height * width * 4 ** step
        entering = widths[level - 1] if level else channels
        peak = max(peak, pixels * max(channels, entering) * ALIVE_ACTIVATIONS)
    attention = 0 if model.device.type == "cuda" else (height * width) ** 2
    return (peak + attention) * itemsize


def _fitting(vae: Vae, direction: str, device: torch.device, latent_size, whole, tiled):
    """whole() when its estimate fits the free memory, else tiled(tile, overlap) with the largest
    tile that fits; a whole attempt that runs out of memory is retried once, tiled."""
    free = devices.free_memory(device)
    need = activation_bytes(vae, latent_size, direction)
    height, width = (n * SCALE for n in latent_size)
    if need > free:
        tile = _fitting_tile(vae, direction, free)
        log.info("VAE %s of %dx%d needs about %.2f GiB, %.2f GiB free on %s: going in %d px tiles",
                 direction, width, height, need / 2**30, free / 2**30, device, tile)
        return tiled(tile, min(AUTO_OVERLAP, tile // 4))
    try:
        return whole()
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
    # out of the except block, so the failed attempt's tensors (held by the traceback) can go
    devices.free_cached_memory()
    tile = AUTO_TILE
    while tile >= max(height, width) and tile > MIN_AUTO_TILE:  # tiles smaller than the image, or no gain
        tile //= 2
    log.warning("VAE %s of %dx%d ran out of memory on %s; retrying in %d px tiles",
                direction, width, height, device, tile)
    return tiled(tile, min(AUTO_OVERLAP, tile // 4))


def _fitting_tile(vae: Vae, direction: str, free: int) -> int:
    tile = AUTO_TILE
    while tile > MIN_AUTO_TILE and activation_bytes(vae, (tile // SCALE,) * 2, direction) > free:
        tile //= 2
    return tile


def _finite(vae: Vae, direction: str, run) -> torch.Tensor:
    """run(); when a half-precision VAE gives NaN/inf, the VAE moves to the fallback dtype (for good,
    and every VAE loaded later too) and run() again."""
    out = run()
    model = vae.vae
    if model.dtype == torch.float32 or torch.isfinite(out).all():
        return out
    fallback = devices.half_fallback_dtype(model.device)
    if fallback == model.dtype:
        fallback = torch.float32
    previous = model.dtype
    model.to(fallback)
    if devices.remember_vae_upcast(fallback):
        log.warning("the VAE %s gave NaN/inf in %s: it now runs in %s, and so does every VAE loaded later "
                    "(start with --precision fp32, or bf16 where supported, to begin there)",
                    direction, str(previous).removeprefix("torch."), str(fallback).removeprefix("torch."))
    return run()


def _vae_input(vae: Vae, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """On the device the memory manager runs the VAE on (a streamed VAE's weights say "cpu")."""
    return tensor.to(device, vae.vae.dtype)


def _pixels_in(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [H,W,C] 0..1 -> [1,C,H,W] -1..1."""
    return image.movedim(-1, 0)[None] * 2 - 1


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
    pixels, so memory stays that of one tile whatever the image size (see `_blend_tiles`)."""
    model = vae.vae
    tile, overlap = _tile_geometry(tile_size, overlap)
    images = []
    activation = activation_bytes(vae, (tile // SCALE, tile // SCALE), "decode")
    with memory_manager.using(model, activation) as device, torch.no_grad(), \
            interruptible(model, check_interrupt):
        for latent in samples:
            pixels = _finite(vae, "decode", lambda: _blend_tiles(
                lambda z: model.decode(z).sample, _vae_input(vae, latent[None], device) / vae.scaling_factor,
                tile // SCALE, overlap // SCALE, SCALE))
            images.append((pixels.float() / 2 + 0.5).clamp(0, 1).movedim(1, -1).cpu())
    return torch.cat(images)


def encode_tiled(vae: Vae, pixels: torch.Tensor, tile_size: int = 512, overlap: int = 64,
                 check_interrupt: CheckInterrupt = None) -> torch.Tensor:
    """IMAGE -> LATENT samples, encoding overlapping tiles blended across the overlap."""
    model = vae.vae
    tile, overlap = _tile_geometry(tile_size, overlap)
    pixels = crop_to_multiple(pixels)[..., :3]
    latents = []
    activation = activation_bytes(vae, (tile // SCALE, tile // SCALE), "encode")
    with memory_manager.using(model, activation) as device, torch.no_grad(), \
            interruptible(model, check_interrupt):
        for image in pixels:
            mean = _finite(vae, "encode", lambda: _blend_tiles(
                lambda x: model.encode(x).latent_dist.mode(), _vae_input(vae, _pixels_in(image), device),
                tile, overlap, 1 / SCALE))
            latents.append(mean.float() * vae.scaling_factor)
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


def _tile_geometry(tile_size: int, overlap: int) -> tuple[int, int]:
    tile_size = tile_size // SCALE * SCALE
    if tile_size < SCALE * 2:
        raise ValueError(f"tile_size must be at least {SCALE * 2} pixels, got {tile_size}")
    overlap = max(0, min(overlap, tile_size // 4)) // SCALE * SCALE  # ComfyUI: at most a quarter of the tile
    return tile_size, overlap


def _blend_tiles(run, x: torch.Tensor, tile: int, overlap: int, scale: float) -> torch.Tensor:
    """`run` over tile x tile windows of x [1,C,H,W] that overlap by `overlap`, its outputs (`scale`
    times the size) summed with weights that ramp up from each tile's inner edges across the overlap,
    then divided by the summed weights (ComfyUI's feathered tiles). A tile's edge pixels, which saw
    padding instead of their neighbours, so count least where another tile saw them whole."""
    height, width = x.shape[-2:]
    out = weight_sum = None
    for top in _tile_starts(height, tile, overlap):
        for left in _tile_starts(width, tile, overlap):
            bottom, right = min(top + tile, height), min(left + tile, width)
            piece = run(x[..., top:bottom, left:right]).float()
            if out is None:
                out = piece.new_zeros(*piece.shape[:2], round(height * scale), round(width * scale))
                weight_sum = piece.new_zeros(1, 1, *out.shape[-2:])
            rows = _ramp(piece.shape[-2], round(overlap * scale), top > 0, bottom < height, piece)
            cols = _ramp(piece.shape[-1], round(overlap * scale), left > 0, right < width, piece)
            weight = rows[:, None] * cols[None, :]
            y, x0 = round(top * scale), round(left * scale)
            out[..., y:y + piece.shape[-2], x0:x0 + piece.shape[-1]] += piece * weight
            weight_sum[..., y:y + piece.shape[-2], x0:x0 + piece.shape[-1]] += weight
    return out / weight_sum


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + tile - overlap)
    return starts


def _ramp(length: int, overlap: int, rise: bool, fall: bool, like: torch.Tensor) -> torch.Tensor:
    """1 inside, falling linearly towards an edge that borders another tile (never to 0, so a pixel
    only one tile covers keeps its value)."""
    weight = torch.ones(length, device=like.device)
    if overlap > 0:
        steps = torch.arange(1, min(overlap, length) + 1, device=like.device) / (overlap + 1)
        if rise:
            weight[:len(steps)] = torch.minimum(weight[:len(steps)], steps)
        if fall:
            weight[-len(steps):] = torch.minimum(weight[-len(steps):], steps.flip(0))
    return weight


def crop_to_multiple(pixels: torch.Tensor) -> torch.Tensor:
    """Center-crop [B,H,W,C] to multiples of 8, as ComfyUI does before encoding."""
    height, width = pixels.shape[1] // SCALE * SCALE, pixels.shape[2] // SCALE * SCALE
    if (height, width) == tuple(pixels.shape[1:3]):
        return pixels
    top, left = (pixels.shape[1] % SCALE) // 2, (pixels.shape[2] % SCALE) // 2
    return pixels[:, top:top + height, left:left + width]
