"""Where and when a Cond acts: ComfyUI's area, mask and timestep-range conditioning.

The nodes (core/conditioning_ops.py) write these keys into Cond.extra; the sampler reads them:
  area            (h, w, y, x) in latent cells, or ("percentage", h, w, y, x) as fractions of the latent
  strength        weight of an area Cond's prediction (default 1)
  mask            MASK [B,H,W] or [H,W], resized to the latent; its values weight the prediction
  mask_strength   scales the mask
  set_area_to_bounds   the mask's area becomes its bounding box (ConditioningSetMask "mask bounds")
  start_percent / end_percent   the Cond takes part only while sigma is within this part of the schedule

A Cond with an area runs the UNet on its crop of x; predictions are blended per latent cell by their
weights (ComfyUI's get_area_and_mult / calc_cond_batch): the mask times strength, and for an area without
a mask edges that lie inside the latent fade in over 8 cells.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model_types import Cond

FEATHER = 8  # cells over which an area's inner edges fade in, as ComfyUI


@dataclass
class Region:
    """One Cond's crop of the latent (h, w, y, x) and its weight over that crop [B,1,h,w]."""

    crop: tuple[int, int, int, int]
    mult: torch.Tensor


def is_plain(cond: Cond) -> bool:
    """No area, mask or strength: the Cond weighs 1 everywhere."""
    return not any(k in cond.extra for k in ("area", "mask", "strength"))


def region(cond: Cond, batch: int, height: int, width: int, device) -> Region:
    """The crop and per-cell weight of `cond` on a [batch, C, height, width] latent."""
    e = cond.extra
    mask = None
    if "mask" in e:
        mask = e["mask"].to(device, torch.float32)
        mask = mask.reshape(-1, 1, *mask.shape[-2:])
        if mask.shape[-2:] != (height, width):
            mask = F.interpolate(mask, size=(height, width), mode="bilinear")
        mask = mask[torch.arange(batch) % mask.shape[0]] * float(e.get("mask_strength", 1.0))
    crop = _crop(e.get("area"), height, width)
    if mask is not None and e.get("set_area_to_bounds"):
        crop = _bounds(mask, height, width)
    h, w, y, x = crop
    if mask is not None:
        mult = mask[:, :, y:y + h, x:x + w].clone()
    else:
        mult = torch.ones(batch, 1, h, w, device=device)
    mult = mult * float(e.get("strength", 1.0))
    if mask is None and "area" in e:
        ramp = (torch.arange(FEATHER, device=device, dtype=torch.float32) + 1) / FEATHER
        for dim, (start, size, full) in ((2, (y, h, height)), (3, (x, w, width))):
            n = min(FEATHER, size)
            shape = [1, 1, 1, 1]
            shape[dim] = n
            if start != 0:
                mult.narrow(dim, 0, n).mul_(ramp[:n].reshape(shape))
            if start + size < full:
                mult.narrow(dim, size - n, n).mul_(ramp[:n].flip(0).reshape(shape))
    return Region(crop, mult)


def _crop(area, height: int, width: int) -> tuple[int, int, int, int]:
    if area is None:
        return height, width, 0, 0
    if area[0] == "percentage":
        _, h, w, y, x = area
        h, w, y, x = max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width)
    else:
        h, w, y, x = area
    y, x = min(max(int(y), 0), height - 1), min(max(int(x), 0), width - 1)
    return min(max(int(h), 1), height - y), min(max(int(w), 1), width - x), y, x


def _bounds(mask: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """The box around the mask's cells above 0.5 (the whole latent if there are none)."""
    on = mask.amax(dim=(0, 1)) > 0.5
    if not on.any():
        return height, width, 0, 0
    rows, cols = on.any(1).nonzero().flatten(), on.any(0).nonzero().flatten()
    y, x = int(rows[0]), int(cols[0])
    return int(rows[-1]) - y + 1, int(cols[-1]) - x + 1, y, x


def sigma_range(cond: Cond, percent_to_sigma) -> tuple[float, float] | None:
    """(highest, lowest) sigma at which the Cond takes part, or None when it always does."""
    e = cond.extra
    if "start_percent" not in e and "end_percent" not in e:
        return None
    return percent_to_sigma(float(e.get("start_percent", 0.0))), percent_to_sigma(float(e.get("end_percent", 1.0)))


def with_values(conditioning: list[Cond], **values) -> list[Cond]:
    """Each Cond with `values` set in its extra (ComfyUI's node_helpers.conditioning_set_values)."""
    return [Cond(c.embeds, c.pooled, list(c.controls), {**c.extra, **values}) for c in conditioning]
