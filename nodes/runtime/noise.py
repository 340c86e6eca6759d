"""Seeded noise: one CPU generator per image, so a seed gives the same image alone, in a batch, on any GPU.

Image i of a batch uses seed + i (A1111's "correct seeds for batches"). The same generators go on to
feed the noise that ancestral and SDE samplers add at each step, so that noise is per image too.
"""
from __future__ import annotations

from typing import Sequence

import torch

_SEED_SPACE = 2 ** 64  # seeds are unsigned 64-bit, as ComfyUI's seed widget


def generators(seed: int, count: int, batch_index: Sequence[int] | None = None) -> list[torch.Generator]:
    """CPU generators for `count` images: seed + i, or seed + batch_index[i] for images that were cut out
    of a larger batch (ComfyUI's LATENT "batch_index")."""
    offsets = list(batch_index) if batch_index is not None else list(range(count))
    if len(offsets) != count:
        raise ValueError(f"batch_index has {len(offsets)} entries for a batch of {count}")
    return [torch.Generator("cpu").manual_seed((seed + offset) % _SEED_SPACE) for offset in offsets]


def gaussian(gens: Sequence[torch.Generator], shape: Sequence[int], device=None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise [len(gens), *shape], image i drawn from gens[i] on the CPU."""
    noise = torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in gens])
    return noise.to(device=device, dtype=dtype)
