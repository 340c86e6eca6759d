"""LoRA files as weight patches on MODEL and CLIP values (ComfyUI's ModelPatcher idea).

Loading a LoRA never changes the loaded model: `with_lora` returns new MODEL/CLIP values that share
the base modules and carry a list of `WeightPatch`es. `applied(value)` adds their deltas to the
weights just for one sampling run or one prompt encoding, and puts back the saved originals
afterwards, bit for bit, even when the run fails. So the cached base model stays the base model, a
LoRA at strength 0 (no patches at all) gives exactly the image without it, and several LoRAs stack.

Each patched weight becomes W + sum over LoRAs of strength * (alpha / rank) * up @ down, computed in
float32 and cast to W's dtype once. Conv LoRAs (LoCon) flatten to the same product.

Files: `.safetensors`, or `.pt/.ckpt` through torch.load(weights_only=True) (state_dict_files);
kohya and diffusers/PEFT key spellings (lora_keys). Keys that are not plain LoRA pairs (LoHa, LoKr,
DoRA, Tucker `lora_mid`) are skipped with a warning; a file of which nothing applies is an error.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import lora_keys, model_cache
from .model_types import DiffusionModel, TextEncoder
from .state_dict_files import CheckpointError, open_state_dict

log = logging.getLogger(__name__)

UNET = -1  # WeightPatch.component of the UNet; text encoders are 0, 1 (their index in TextEncoder.encoders)


class LoraError(ValueError):
    """A LoRA file that can't be applied to this model; the message names the file."""


@dataclass(frozen=True, eq=False)
class LoraPair:
    """One module's low-rank update as stored: up [out, rank, ...] @ down [rank, in, ...]."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None  # None: scale 1 (PEFT's default of alpha = rank)

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass(frozen=True)
class LoraFile:
    name: str
    pairs: dict[str, LoraPair]  # canonical file name of the module -> its pair
    skipped: tuple[str, ...]  # keys that are not plain LoRA pairs
    rslora: bool = False  # PEFT's rank-stabilised scaling alpha / sqrt(rank)

    def scale(self, pair: LoraPair) -> float:
        if pair.alpha is None:
            return 1.0
        return pair.alpha / (pair.rank ** 0.5 if self.rslora else pair.rank)


@dataclass(frozen=True, eq=False)
class WeightPatch:
    component: int  # UNET, or the index of a text encoder
    weight: str  # parameter name in that component, e.g. "down_blocks.0.attentions.0.proj_in.weight"
    pair: LoraPair
    scale: float  # strength * alpha / rank

    def delta(self, like: torch.Tensor) -> torch.Tensor:
        """The update in float32, on `like`'s device and in its shape."""
        up = self.pair.up.to(like.device, torch.float32).flatten(1)
        down = self.pair.down.to(like.device, torch.float32).flatten(1)
        return (up @ down).mul_(self.scale).reshape(like.shape)


# -- reading files ---------------------------------------------------------------------------------------

def read_lora(path: str | Path) -> LoraFile:
    """The LoRA pairs of a file, remembered per file version (path, mtime, size)."""
    return _read_cached(*model_cache.file_signature(path))


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> LoraFile:
    del mtime_ns, size  # part of the cache key only
    try:
        tensors = open_state_dict(path)
    except CheckpointError as err:
        raise LoraError(str(err)) from err
    name = Path(path).name
    parts: dict[str, dict[str, torch.Tensor]] = {}
    skipped = []
    for key in tensors:
        split = lora_keys.split_key(key)
        if split is None:
            skipped.append(key)
        else:
            parts.setdefault(split[0], {})[split[1]] = tensors[key]
    alphas, patterns, rslora = _peft_alphas(tensors.metadata)
    pairs = {}
    for module, found in parts.items():
        if "down" not in found or "up" not in found or "mid" in found:
            skipped += [f"{module} ({'/'.join(sorted(found))})"]
            continue
        down, up = found["down"], found["up"]
        if down.ndim < 2 or up.ndim < 2 or up.shape[1] != down.shape[0]:
            raise LoraError(f"{name}: {module}: up {tuple(up.shape)} and down {tuple(down.shape)} don't multiply")
        alpha = float(found["alpha"]) if "alpha" in found else _alpha_for(module, alphas, patterns)
        pairs[module] = LoraPair(down, up, alpha)
    if not pairs:
        raise LoraError(f"{name}: no LoRA weights found (keys like {_some(list(tensors))}); "
                        "Inkwash reads kohya and diffusers/PEFT LoRA files")
    return LoraFile(name, pairs, tuple(skipped), rslora)


def _peft_alphas(metadata: dict) -> tuple[dict[str, float], list[tuple[str, str, float]], bool]:
    """From the `lora_adapter_metadata` that diffusers writes (PEFT LoraConfig values per component):
    ({component: lora_alpha}, [(component, alpha_pattern key, alpha)], use_rslora). Without it,
    alpha = rank (scale 1), as diffusers assumes."""
    try:
        config = json.loads(metadata.get("lora_adapter_metadata") or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}, [], False
    if not isinstance(config, dict):
        return {}, [], False
    alphas, patterns, rslora = {}, [], False
    for key, value in config.items():
        component, _, field = key.partition(".")
        if field == "lora_alpha" and isinstance(value, (int, float)):
            alphas[component] = float(value)
        elif field == "alpha_pattern" and isinstance(value, dict):
            patterns += [(component, pattern, float(alpha)) for pattern, alpha in value.items()]
        elif field == "use_rslora":
            rslora = rslora or value is True
    return alphas, patterns, rslora


def _alpha_for(module: str, alphas: dict[str, float], patterns: list[tuple[str, str, float]]) -> float | None:
    component, _, rest = module.partition(".")
    for pattern_component, pattern, alpha in patterns:
        # PEFT matches an alpha_pattern key against the end of the module name
        if pattern_component == component and (rest == pattern or rest.endswith("." + pattern)):
            return alpha
    return alphas.get(component)


def _some(keys: list[str], count: int = 5) -> str:
    return ", ".join(keys[:count]) + (", ..." if len(keys) > count else "")


# -- patches -----------------------------------------------------------------------------------------------

def with_lora(model: DiffusionModel | None, clip: TextEncoder | None, lora: LoraFile,
              strength_model: float, strength_clip: float):
    """(MODEL, CLIP) that carry this LoRA's patches besides any they had. A strength of 0 leaves that
    value as it is. Raises LoraError when nothing in the file is for these models, or when a matching
    module's shape differs (a LoRA for another family)."""
    unet_patches = _patches(lora, model.unet, lora_keys.unet_names(model.unet), UNET) if model else []
    clip_patches = []
    if clip is not None:
        for index, (encoder, component) in enumerate(zip(clip.encoders, lora_keys.clip_components(clip.family.name))):
            clip_patches += _patches(lora, encoder, lora_keys.text_encoder_names(encoder, component), index)
    if not unet_patches and not clip_patches:
        which = "model or its text encoder" if clip is not None else "model"
        family = (model or clip).family.name
        raise LoraError(f"{lora.name}: none of its weights is for this {which} ({family}); keys like "
                        f"{_some(sorted(lora.pairs))}. Is it a LoRA for another model family?")
    used = {p.pair for p in unet_patches + clip_patches}
    unused = [name for name, pair in lora.pairs.items() if pair not in used] + list(lora.skipped)
    if clip is None:  # model-only loading leaves the text encoder's part out on purpose
        unused = [name for name in unused if not name.startswith(("lora_te", "text_encoder"))]
    if unused:
        log.warning("%s: %d LoRA keys not applied (%s)", lora.name, len(unused), _some(unused))
    if model is not None and strength_model != 0:
        model = dataclasses.replace(model, lora_patches=model.lora_patches + _scaled(unet_patches, strength_model))
    if clip is not None and strength_clip != 0:
        clip = dataclasses.replace(clip, lora_patches=clip.lora_patches + _scaled(clip_patches, strength_clip))
    return model, clip


def _patches(lora: LoraFile, component, names: dict[str, str], index: int) -> list[WeightPatch]:
    patches = []
    for file_name, pair in lora.pairs.items():
        module = names.get(file_name)
        if module is None:
            continue
        weight = component.get_parameter(module + ".weight")
        if pair.up.shape[0] != weight.shape[0] or pair.down[0].numel() != weight[0].numel():
            changes = (pair.up.shape[0], *pair.down.shape[1:])
            raise LoraError(f"{lora.name}: {file_name} changes a weight of shape {changes}, but this model's "
                            f"{module} is {tuple(weight.shape)}: is the LoRA for another model family "
                            "(SD1 / SD2 / SDXL)?")
        patches.append(WeightPatch(index, module + ".weight", pair, lora.scale(pair)))
    return patches


def _scaled(patches: list[WeightPatch], strength: float) -> tuple[WeightPatch, ...]:
    return tuple(dataclasses.replace(p, scale=p.scale * strength) for p in patches)


@contextmanager
def applied(value: DiffusionModel | TextEncoder):
    """Add `value`'s LoRA deltas to its weights in place for the body of the `with`, then restore the
    original weights exactly. Patches with an `install(value) -> undo` method (hypernetworks) are
    installed for the body too. Without patches it does nothing."""
    patches = getattr(value, "lora_patches", ())
    if not patches:
        yield value
        return
    components = value.encoders if isinstance(value, TextEncoder) else None
    grouped: dict[tuple[int, str], list[WeightPatch]] = {}
    hooks = [p for p in patches if hasattr(p, "install")]  # module patches (hypernetworks), not weight deltas
    for patch in patches:
        if not hasattr(patch, "install"):
            grouped.setdefault((patch.component, patch.weight), []).append(patch)
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    undo: list = []
    try:
        with torch.no_grad():
            for (component, name), group in grouped.items():
                module = value.unet if component == UNET else components[component]
                weight = module.get_parameter(name)
                # the original goes to the CPU, so a patched model needs no second copy in VRAM
                saved.append((weight, weight.detach().to("cpu", copy=True)))
                total = group[0].delta(weight)
                for patch in group[1:]:
                    total += patch.delta(weight)
                weight.copy_(total.add_(weight))  # summed in float32, rounded to the weight's dtype once
        for hook in hooks:  # after the weights: a hook may wrap the modules that hold them
            undo.append(hook.install(value))
        yield value
    finally:
        for remove in reversed(undo):
            remove()
        with torch.no_grad():
            for weight, original in reversed(saved):
                weight.copy_(original)
