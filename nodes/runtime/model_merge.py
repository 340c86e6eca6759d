"""Merging two models' weights (ComfyUI's ModelMergeSimple and CLIPMergeSimple) as weight patches.

Like a LoRA (runtime/lora.py), a merge never changes a loaded model: the merged MODEL or CLIP shares
model1's modules and carries one `MergePatch` per weight, which `lora.applied` turns into
W1 + (1 - ratio) * (W2 - W1) = ratio * W1 + (1 - ratio) * W2 for one sampling run or one encoding,
then restores W1 exactly. Patches model1 already had (LoRAs, earlier merges) stay and add up.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .lora import UNET
from .model_types import DiffusionModel, TextEncoder

# Text encoder entries that are not weights to average (ComfyUI skips them too)
_CLIP_SKIPPED = (".position_ids", ".logit_scale")


@dataclass(frozen=True, eq=False)
class MergePatch:
    component: int  # UNET, or the index of a text encoder
    weight: str  # parameter name in that component
    other: torch.Tensor  # model2's weight
    factor: float  # 1 - ratio

    def delta(self, like: torch.Tensor) -> torch.Tensor:
        """factor * (W2 - W1) in float32, on W1's device."""
        return (self.other.to(like.device, torch.float32) - like.float()).mul_(self.factor)


def _patches(node: str, what: str, first: torch.nn.Module, second: torch.nn.Module, component: int,
             factor: float, skipped: tuple[str, ...] = ()) -> list[MergePatch]:
    theirs = dict(second.named_parameters())
    patches, mismatched = [], []
    for name, weight in first.named_parameters():
        other = theirs.get(name)
        if other is None or name.endswith(skipped):
            continue
        if other.shape != weight.shape:
            mismatched.append(f"{name} {tuple(weight.shape)} vs {tuple(other.shape)}")
            continue
        if other is not weight:
            patches.append(MergePatch(component, name, other.detach(), factor))
    if mismatched:
        raise ValueError(f"{node}: the two {what}s have weights of different shapes ({', '.join(mismatched[:3])}): "
                         "they are of different model families")
    return patches


def merge_models(model1: DiffusionModel, model2: DiffusionModel, ratio: float) -> DiffusionModel:
    """ModelMergeSimple: ratio 1 is model1, 0 is model2's weights (with model1's schedule and family)."""
    if model1.family.name != model2.family.name or model1.family.kind != model2.family.kind:
        raise ValueError(f"ModelMergeSimple: model1 is {model1.family.name} ({model1.family.kind}) and model2 "
                         f"{model2.family.name} ({model2.family.kind}): only models of one family merge")
    if ratio == 1.0:
        return model1
    patches = _patches("ModelMergeSimple", "model", model1.unet, model2.unet, UNET, 1.0 - ratio)
    return dataclasses.replace(model1, lora_patches=model1.lora_patches + tuple(patches))


def merge_clips(clip1: TextEncoder, clip2: TextEncoder, ratio: float) -> TextEncoder:
    """CLIPMergeSimple: ratio 1 is clip1, 0 is clip2's weights."""
    if len(clip1.encoders) != len(clip2.encoders):
        raise ValueError(f"CLIPMergeSimple: clip1 has {len(clip1.encoders)} text encoders and clip2 "
                         f"{len(clip2.encoders)} ({clip1.family.name} vs {clip2.family.name})")
    if ratio == 1.0:
        return clip1
    patches = []
    for index, (first, second) in enumerate(zip(clip1.encoders, clip2.encoders)):
        patches += _patches("CLIPMergeSimple", "CLIP", first, second, index, 1.0 - ratio, _CLIP_SKIPPED)
    return dataclasses.replace(clip1, lora_patches=clip1.lora_patches + tuple(patches))
