"""MASK operations of ComfyUI's mask nodes: MASK is [B,H,W] in 0..1 (1 = the area to work on).

Every function takes a single [H,W] mask too, and returns a batch [B,H,W].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .compositing import as_mask_batch

IMAGE_CHANNELS = ("red", "green", "blue", "alpha")


def solid(value: float, width: int, height: int) -> torch.Tensor:
    return torch.full((1, height, width), value, dtype=torch.float32)


def invert(mask: torch.Tensor) -> torch.Tensor:
    return 1.0 - mask


def from_image(image: torch.Tensor, channel: str) -> torch.Tensor:
    """ImageToMask: one channel of IMAGE [B,H,W,C] as MASK [B,H,W]."""
    if channel not in IMAGE_CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(IMAGE_CHANNELS)}, got {channel!r}")
    index = IMAGE_CHANNELS.index(channel)
    if index >= image.shape[-1]:
        raise ValueError(f"the image has no {channel} channel (it has {image.shape[-1]} channels)")
    return image[..., index]


def to_image(mask: torch.Tensor) -> torch.Tensor:
    """MaskToImage: grey IMAGE [B,H,W,3] with the mask in every colour channel."""
    return as_mask_batch(mask)[..., None].expand(-1, -1, -1, 3)


def crop(mask: torch.Tensor, x: int, y: int, width: int, height: int) -> torch.Tensor:
    """CropMask: width x height from (x, y); what lies outside the mask is left out."""
    return as_mask_batch(mask)[:, y:y + height, x:x + width]


def feather(mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> torch.Tensor:
    """FeatherMask: fade the mask linearly to its edges over the given widths: the outermost row or
    column keeps 1/n of its value, the n-th from the edge all of it."""
    out = as_mask_batch(mask).clone()
    height, width = out.shape[-2:]
    for size, axis, from_end in ((min(left, width), -1, False), (min(right, width), -1, True),
                                 (min(top, height), -2, False), (min(bottom, height), -2, True)):
        if size == 0:
            continue
        ramp = torch.arange(1, size + 1, dtype=out.dtype, device=out.device) / size
        if from_end:
            ramp = ramp.flip(0)
        shape = [1, 1, 1]
        shape[axis] = size
        start = out.shape[axis] - size if from_end else 0
        out.narrow(axis, start, size).mul_(ramp.reshape(shape))
    return out


def grow(mask: torch.Tensor, expand: int, tapered_corners: bool = True) -> torch.Tensor:
    """GrowMask: grey dilation (expand > 0) or erosion (< 0), one pixel per step, |expand| steps, with
    a 3x3 cross (tapered_corners, rounder growth) or a full 3x3 square; pixels outside the mask count
    as its nearest edge pixel (scipy.ndimage's reflect mode, which ComfyUI uses)."""
    out = as_mask_batch(mask).float()[:, None]
    if expand == 0:
        return out[:, 0]
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if not (tapered_corners and dy != 0 and dx != 0)]
    reduce = torch.amax if expand > 0 else torch.amin
    for _ in range(abs(expand)):
        padded = F.pad(out, (1, 1, 1, 1), mode="replicate")
        height, width = out.shape[-2:]
        shifted = [padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in offsets]
        out = reduce(torch.stack(shifted), dim=0)
    return out[:, 0]
