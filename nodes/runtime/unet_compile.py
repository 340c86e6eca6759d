"""`--compile`: the UNet compiled with torch.compile for sampling (off by default).

Each UNet module is wrapped once and the wrapper kept on the module (in its __dict__, so not as a
submodule: state_dict and moves are unchanged), so every job reuses it;
`dynamic=False` has torch compile one graph per input shape (batch, size, conditioning length) and
reuse it for the next job of that shape. Parameters are graph inputs (torch's default for modules), so
LoRA patches applied in place do not recompile.
"""
from __future__ import annotations

import threading

import torch

_enabled = False
_backend = "inductor"
_lock = threading.Lock()
_ATTRIBUTE = "_inkwash_compiled"  # (backend, compiled module)


def set_compile(enabled: bool, backend: str = "inductor") -> None:
    """Turn compiling on or off for UNets sampled from now on; `backend` is torch.compile's."""
    global _enabled, _backend
    with _lock:
        _enabled, _backend = enabled, backend


def enabled() -> bool:
    return _enabled


def for_sampling(unet: torch.nn.Module) -> torch.nn.Module:
    """The module to call while sampling: `unet` itself, or with --compile its compiled wrapper (which
    reads through to the module's attributes: dtype, device, config)."""
    if not _enabled:
        return unet
    with _lock:
        backend, compiled = unet.__dict__.get(_ATTRIBUTE, (None, None))
        if compiled is None or backend != _backend:
            compiled = torch.compile(unet, backend=_backend, dynamic=False)
            # the wrapper refers back to the module: a cycle, freed with it by the garbage collector
            unet.__dict__[_ATTRIBUTE] = (_backend, compiled)
        return compiled
