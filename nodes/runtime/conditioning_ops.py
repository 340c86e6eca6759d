"""CONDITIONING arithmetic of ComfyUI's core nodes, on lists of Cond.

The sampler runs every Cond of a list as its own row of the UNet batch and averages the rows' noise
predictions (runtime/sampling.py), which is what ComfyUI does with conds that have no area or mask:
so ConditioningCombine is the concatenation of the lists. Average, Concat and ZeroOut change the
token embeddings (and SDXL's pooled embedding) themselves.
"""
from __future__ import annotations

import dataclasses
import logging

import torch

from .model_types import Cond

log = logging.getLogger(__name__)


def combine(conditioning_1: list[Cond], conditioning_2: list[Cond]) -> list[Cond]:
    return list(conditioning_1) + list(conditioning_2)


def _first(node: str, conditioning_from: list[Cond]) -> Cond:
    if not conditioning_from:
        raise ValueError(f"{node}: conditioning_from is empty")
    if len(conditioning_from) > 1:
        log.warning("%s: conditioning_from has %d entries; only the first is used", node, len(conditioning_from))
    return conditioning_from[0]


def _check_width(node: str, to: torch.Tensor, source: torch.Tensor) -> None:
    if to.shape[-1] != source.shape[-1]:
        raise ValueError(f"{node}: conditioning_to has {to.shape[-1]}-wide embeddings and conditioning_from "
                         f"{source.shape[-1]}-wide: they come from different text encoders")


def average(conditioning_to: list[Cond], conditioning_from: list[Cond], to_strength: float) -> list[Cond]:
    """ConditioningAverage: each Cond of conditioning_to becomes to * strength + from * (1 - strength),
    `from` being the first Cond of conditioning_from cut or zero-padded to the same token count. Pooled
    embeddings mix the same way; a Cond without one takes from's."""
    source = _first("ConditioningAverage", conditioning_from)
    out = []
    for cond in conditioning_to:
        tokens = cond.embeds.shape[1]
        _check_width("ConditioningAverage", cond.embeds, source.embeds)
        other = source.embeds[:, :tokens].to(cond.embeds)
        if other.shape[1] < tokens:
            padding = other.new_zeros((other.shape[0], tokens - other.shape[1], other.shape[2]))
            other = torch.cat([other, padding], dim=1)
        embeds = cond.embeds * to_strength + other * (1.0 - to_strength)
        pooled = cond.pooled
        if source.pooled is not None:
            pooled = source.pooled if pooled is None else \
                pooled * to_strength + source.pooled.to(pooled) * (1.0 - to_strength)
        out.append(dataclasses.replace(cond, embeds=embeds, pooled=pooled))
    return out


def concat(conditioning_to: list[Cond], conditioning_from: list[Cond]) -> list[Cond]:
    """ConditioningConcat: the first Cond of conditioning_from's tokens appended to each Cond of
    conditioning_to (which keeps its pooled embedding and everything else)."""
    source = _first("ConditioningConcat", conditioning_from)
    out = []
    for cond in conditioning_to:
        _check_width("ConditioningConcat", cond.embeds, source.embeds)
        other = source.embeds.to(cond.embeds)
        if other.shape[0] != cond.embeds.shape[0]:
            other = other.expand(cond.embeds.shape[0], -1, -1)
        out.append(dataclasses.replace(cond, embeds=torch.cat((cond.embeds, other), dim=1)))
    return out


def zero_out(conditioning: list[Cond]) -> list[Cond]:
    """ConditioningZeroOut: zero token and pooled embeddings (SDXL's usual negative for some models),
    everything else (ControlNet hints, size conditioning) kept."""
    return [dataclasses.replace(c, embeds=torch.zeros_like(c.embeds),
                                pooled=None if c.pooled is None else torch.zeros_like(c.pooled))
            for c in conditioning]
