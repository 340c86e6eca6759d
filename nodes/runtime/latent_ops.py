"""LATENT operations of ComfyUI's latent nodes: paste, blend, crop, flip, rotate, batch.

A LATENT is a dict; every function returns a new dict with the input's other keys (noise_mask,
batch_index) kept, as ComfyUI's nodes do, except where the operation must change them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .compositing import LATENT_SCALE, composite, to_batch
from .images import center_crop

ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
FLIPS = ("x-axis: vertically", "y-axis: horizontally")


def paste(samples_to: dict, samples_from: dict, x: int, y: int, feather: int = 0) -> dict:
    """LatentComposite: samples_from pasted onto samples_to at pixel offset (x, y). With feather, the
    pasted latent fades in linearly over `feather` pixels on each side that lies inside samples_to."""
    x, y, feather = x // LATENT_SCALE, y // LATENT_SCALE, feather // LATENT_SCALE
    target = samples_to["samples"]
    out = target.clone()
    source = samples_from["samples"].to(target.device, target.dtype)
    source = to_batch(source, target.shape[0])[:, :, :max(0, target.shape[2] - y), :max(0, target.shape[3] - x)]
    height, width = source.shape[2], source.shape[3]
    if height == 0 or width == 0:
        return {**samples_to, "samples": out}
    mask = torch.ones_like(source)
    for t in range(feather):
        rate = (t + 1) / feather
        if y != 0:
            mask[:, :, t:t + 1, :] *= rate
        if y + height < target.shape[2]:
            mask[:, :, height - 1 - t:height - t, :] *= rate
        if x != 0:
            mask[:, :, :, t:t + 1] *= rate
        if x + width < target.shape[3]:
            mask[:, :, :, width - 1 - t:width - t] *= rate
    region = out[:, :, y:y + height, x:x + width]
    out[:, :, y:y + height, x:x + width] = source * mask + region * (1 - mask)
    return {**samples_to, "samples": out}


def paste_masked(destination: dict, source: dict, x: int, y: int, resize_source: bool,
                 mask: torch.Tensor | None = None) -> dict:
    """LatentCompositeMasked: source pasted onto destination at pixel offset (x, y), weighted by mask
    (1 = source), optionally resized to the destination first."""
    samples = composite(destination["samples"], source["samples"], x, y, mask, LATENT_SCALE, resize_source)
    return {**destination, "samples": samples}


def blend(samples1: dict, samples2: dict, blend_factor: float) -> dict:
    """LatentBlend: samples1 * blend_factor + samples2 * (1 - blend_factor); samples2 is resized
    (bicubic, center crop) to samples1's size when they differ."""
    first, second = samples1["samples"], samples2["samples"].to(samples1["samples"].device)
    if first.shape[1] != second.shape[1]:
        raise ValueError(f"samples1 has {first.shape[1]} latent channels and samples2 {second.shape[1]}: "
                         "latents of different model families can't be blended")
    if first.shape[2:] != second.shape[2:]:
        second = F.interpolate(center_crop(second, first.shape[3] / first.shape[2]), size=first.shape[2:],
                               mode="bicubic")
    second = to_batch(second, first.shape[0])
    return {**samples1, "samples": first * blend_factor + second * (1 - blend_factor)}


def from_batch(samples: dict, batch_index: int, length: int) -> dict:
    """LatentFromBatch: `length` latents from `batch_index` (negative counts from the end), with their
    noise masks, and a batch_index list so that each keeps the noise it would get in the full batch."""
    latents = samples["samples"]
    count = latents.shape[0]
    if batch_index < 0:
        batch_index += count
    batch_index = max(0, min(count - 1, batch_index))
    length = min(count - batch_index, length)
    out = {**samples, "samples": latents[batch_index:batch_index + length].clone()}
    if "noise_mask" in samples:
        masks = samples["noise_mask"]
        if masks.shape[0] == 1:
            out["noise_mask"] = masks.clone()
        else:
            if masks.shape[0] < count:
                masks = masks.repeat(math.ceil(count / masks.shape[0]), *[1] * (masks.ndim - 1))[:count]
            out["noise_mask"] = masks[batch_index:batch_index + length].clone()
    if "batch_index" in samples:
        out["batch_index"] = list(samples["batch_index"])[batch_index:batch_index + length]
    else:
        out["batch_index"] = list(range(batch_index, batch_index + length))
    return out


def repeat_batch(samples: dict, amount: int) -> dict:
    """RepeatLatentBatch: the batch `amount` times over, with per-latent noise masks repeated too and
    batch_index values continued so each copy gets fresh noise."""
    latents = samples["samples"]
    out = {**samples, "samples": latents.repeat(amount, *[1] * (latents.ndim - 1))}
    masks = samples.get("noise_mask")
    if masks is not None and masks.shape[0] > 1:
        if masks.shape[0] < latents.shape[0]:
            masks = masks.repeat(math.ceil(latents.shape[0] / masks.shape[0]),
                                 *[1] * (masks.ndim - 1))[:latents.shape[0]]
        out["noise_mask"] = masks.repeat(amount, *[1] * (masks.ndim - 1))
    if "batch_index" in samples:
        indices = list(samples["batch_index"])
        offset = max(indices) - min(indices) + 1
        out["batch_index"] = indices + [i + copy * offset for copy in range(1, amount) for i in indices]
    return out


def crop(samples: dict, width: int, height: int, x: int, y: int) -> dict:
    """LatentCrop: width x height pixels from (x, y); the corner is kept at least 64 pixels (8 latent
    pixels) from the right and bottom edges."""
    latents = samples["samples"]
    x, y = x // LATENT_SCALE, y // LATENT_SCALE
    x = max(0, min(x, latents.shape[3] - 8))
    y = max(0, min(y, latents.shape[2] - 8))
    to_x, to_y = x + width // LATENT_SCALE, y + height // LATENT_SCALE
    return {**samples, "samples": latents[:, :, y:to_y, x:to_x]}


def flip(samples: dict, flip_method: str) -> dict:
    """LatentFlip: "x-axis: vertically" flips top to bottom, "y-axis: horizontally" left to right."""
    if flip_method not in FLIPS:
        raise ValueError(f"flip_method must be one of {', '.join(FLIPS)}, got {flip_method!r}")
    dim = 2 if flip_method.startswith("x") else 3
    return {**samples, "samples": torch.flip(samples["samples"], dims=[dim])}


def rotate(samples: dict, rotation: str) -> dict:
    """LatentRotate: clockwise by the given angle."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {', '.join(ROTATIONS)}, got {rotation!r}")
    turns = ROTATIONS.index(rotation)
    return {**samples, "samples": torch.rot90(samples["samples"], k=turns, dims=[3, 2])}
