"""AUTOMATIC1111 hypernetworks (`.pt`), applied as ComfyUI's HypernetworkLoader applies them.

A hypernetwork holds, for some context widths (320, 640, 768, 1280, ...), a pair of small MLPs. In
every attention layer of the UNet (self- and cross-attention) whose key/value input has such a width,
the key input becomes x + strength * mlp_k(x) and the value input x + strength * mlp_v(x).

Like a LoRA (runtime/lora.py), it never changes the loaded model: the MODEL value carries a
`HypernetworkPatch`, which `lora.applied` installs for one sampling run (wrapping each matching
attention's to_k / to_v projection) and removes afterwards.
"""
from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from . import memory_manager, model_cache

ACTIVATIONS = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
    "softsign": torch.nn.Softsign, "mish": torch.nn.Mish,
}


class HypernetworkError(ValueError):
    """A file that is not a hypernetwork Inkwash can apply; the message names the file."""


def read_hypernetwork(path: str | Path) -> dict[int, torch.nn.ModuleList]:
    """{context width: ModuleList([mlp for keys, mlp for values])}, remembered per file version."""
    return _read_cached(*model_cache.file_signature(path))


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, mtime_ns: int, size: int) -> dict[int, torch.nn.ModuleList]:
    del mtime_ns, size  # part of the cache key only
    name = Path(path).name
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # an object weights_only will not build
            raise HypernetworkError(f"{name}: refused: the file holds Python objects besides tensors, and "
                                    "loading them could run arbitrary code") from err
        raise HypernetworkError(f"{name}: not a readable hypernetwork (corrupt?)") from err
    except Exception as err:  # damaged or not a torch file
        raise HypernetworkError(f"{name}: not a readable hypernetwork ({type(err).__name__})") from err
    if not isinstance(data, dict):
        raise HypernetworkError(f"{name}: not a hypernetwork (no dictionary of layers)")
    activation = data.get("activation_func", "linear") or "linear"
    if activation not in ACTIVATIONS:
        raise HypernetworkError(f"{name}: activation {activation!r} is not supported "
                                f"(supported: {', '.join(ACTIVATIONS)})")
    options = {key: bool(data.get(key, False)) for key in ("is_layer_norm", "activate_output")}
    layers = {}
    for key, pair in data.items():
        if isinstance(key, str) and not key.isdigit():
            continue
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, dict) for p in pair):
            raise HypernetworkError(f"{name}: layer {key} is not a pair of state dicts")
        try:
            layers[int(key)] = torch.nn.ModuleList([_mlp(p, activation, **options) for p in pair]).eval()
        except (KeyError, IndexError, RuntimeError) as err:
            raise HypernetworkError(f"{name}: layer {key} can't be built: {err}") from err
    if not layers:
        raise HypernetworkError(f"{name}: not a hypernetwork (no layers keyed by context width)")
    return layers


def _mlp(state: dict, activation: str, is_layer_norm: bool, activate_output: bool) -> torch.nn.Sequential:
    """The module stack of one MLP from its saved weights, in file order (ComfyUI's reading: each
    linear, its activation except after the last unless activate_output, then a LayerNorm when the
    network has them; dropout is a no-op at inference)."""
    names = [k[:-len(".weight")] for k in state if k.endswith(".weight")]
    modules, index = [], 0
    while index < len(names):
        weight, bias = state[names[index] + ".weight"], state[names[index] + ".bias"]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        modules.append(linear)
        last = index == len(names) - (2 if is_layer_norm else 1)
        if activation != "linear" and (not last or activate_output):
            modules.append(ACTIVATIONS[activation]())
        if is_layer_norm:
            index += 1
            norm = torch.nn.LayerNorm(state[names[index] + ".weight"].shape[0])
            norm.load_state_dict({"weight": state[names[index] + ".weight"], "bias": state[names[index] + ".bias"]})
            modules.append(norm)
        index += 1
    return torch.nn.Sequential(*modules)


class _WithHypernetwork(torch.nn.Module):
    """A key or value projection whose input first goes through the hypernetwork: W(x + s * mlp(x))."""

    def __init__(self, projection: torch.nn.Module, mlp: torch.nn.Module, strength: float):
        super().__init__()
        self.projection, self.mlp, self.strength = projection, mlp, strength

    def forward(self, x, *args, **kwargs):
        shifted = x + self.mlp(x.to(self.mlp[0].weight.dtype)).to(x.dtype) * self.strength
        return self.projection(shifted, *args, **kwargs)


@dataclass(frozen=True, eq=False)
class HypernetworkPatch:
    layers: dict[int, torch.nn.ModuleList]
    strength: float
    name: str = ""

    def install(self, model) -> callable:
        """Wrap every matching attention's to_k / to_v in model.unet; returns the undo."""
        wrapped = []
        device = next(model.unet.parameters()).device
        if memory_manager.shared().where(model.unet) == memory_manager.STREAMED:
            device = memory_manager.compute_device()  # its weights rest in RAM; attention runs on the device
        placed = {dim: pair.to(device) for dim, pair in self.layers.items()}
        for module_name, attention in model.unet.named_modules():
            if not module_name.endswith(("attn1", "attn2")) or not hasattr(attention, "to_k"):
                continue
            pair = placed.get(attention.to_k.in_features)
            if pair is None:
                continue
            for projection_name, mlp in (("to_k", pair[0]), ("to_v", pair[1])):
                original = getattr(attention, projection_name)
                setattr(attention, projection_name, _WithHypernetwork(original, mlp, self.strength))
                wrapped.append((attention, projection_name, original))

        def undo():
            for attention, projection_name, original in reversed(wrapped):
                setattr(attention, projection_name, original)
        return undo
