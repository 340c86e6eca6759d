"""SDXL's two-prompt conditioning (CLIPTextEncodeSDXL) and the extra keys the sampler reads.

SDXL's context is CLIP-L features followed by CLIP-G features on the last axis. With a different
prompt per encoder, each prompt is encoded as usual and the halves are put together: CLIP-L's from
text_l, CLIP-G's (and the pooled embedding) from text_g; the shorter side is padded with the empty
prompt's windows, as ComfyUI pads the shorter token list.
"""
from __future__ import annotations

import dataclasses

import torch

from . import text_encode
from .model_types import SDXL, Cond, TextEncoder


def with_extra(conditioning: list[Cond], extra: dict) -> list[Cond]:
    """Copies of the Conds with `extra` added to each one's extra keys."""
    return [dataclasses.replace(cond, extra={**cond.extra, **extra}) for cond in conditioning]


def encode_g_and_l(clip: TextEncoder, text_g: str, text_l: str) -> list[Cond]:
    """CONDITIONING of an SDXL base CLIP with text_g for CLIP-G and text_l for CLIP-L. A CLIP with
    CLIP-G only (the refiner's) takes text_g."""
    if not clip.family.is_xl:
        raise ValueError(f"CLIPTextEncodeSDXL needs an SDXL CLIP, got a {clip.family.name} one: "
                         "use CLIPTextEncode for this model")
    if text_g == text_l or clip.family.name != SDXL:
        return text_encode.encode(clip, text_g)
    from_g, from_l = text_encode.encode(clip, text_g), text_encode.encode(clip, text_l)
    if len(from_g) > 1 and len(from_l) > 1:
        raise ValueError("prompt editing in both text_g and text_l is not supported: schedule one of them")
    l_width = clip.encoders[0].config.hidden_size
    empty = text_encode.encode(clip, "")[0].embeds
    if len(from_l) == 1:
        return [_joined(g, from_l[0], l_width, empty, keep=g) for g in from_g]
    return [_joined(from_g[0], l_cond, l_width, empty, keep=l_cond) for l_cond in from_l]


def _joined(g: Cond, l_cond: Cond, l_width: int, empty: torch.Tensor, keep: Cond) -> Cond:
    """CLIP-L features of `l_cond` next to the CLIP-G features and pooled embedding of `g`; the extra
    keys (a prompt schedule) come from `keep`."""
    l_part, g_part = l_cond.embeds[..., :l_width], g.embeds[..., l_width:]
    l_part = _padded(l_part, g_part.shape[1], empty[..., :l_width])
    g_part = _padded(g_part, l_part.shape[1], empty[..., l_width:])
    return dataclasses.replace(keep, embeds=torch.cat([l_part, g_part], dim=-1), pooled=g.pooled,
                               extra=dict(keep.extra))


def _padded(features: torch.Tensor, length: int, empty_window: torch.Tensor) -> torch.Tensor:
    """`features` [1, tokens, D] extended to `length` tokens with empty-prompt windows."""
    missing = (length - features.shape[1]) // empty_window.shape[1]
    if missing <= 0:
        return features
    return torch.cat([features, empty_window.repeat(1, missing, 1).to(features)], dim=1)
