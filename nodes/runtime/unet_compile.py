"""`--compile`: the UNet compiled with torch.compile for sampling (off by default).

Each UNet module is wrapped once and the wrapper kept while the module lives, so every job reuses it;
`dynamic=False` has torch compile one graph per input shape (batch, size, conditioning length) and
reuse it for the next job of that shape. Parameters are graph inputs (torch's default for modules), so
LoRA patches applied in place do not recompile.
"""
from __future__ import annotations

import threading
import weakref

import torch

_enabled = False
_backend = "inductor"
_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def set_compile(enabled: bool, backend: str = "inductor") -> None:
    """Turn compiling on or off for UNets sampled from now on; `backend` is torch.compile's."""
    global _enabled, _backend
    with _lock:
        if backend != _backend:
            _compiled.clear()
        _enabled, _backend = enabled, backend


def enabled() -> bool:
    return _enabled


def for_sampling(unet: torch.nn.Module) -> torch.nn.Module:
    """The module to call while sampling: `unet` itself, or with --compile its compiled wrapper (which
    reads through to the module's attributes: dtype, device, config)."""
    if not _enabled:
        return unet
    with _lock:
        compiled = _compiled.get(unet)
        if compiled is None:
            compiled = _compiled[unet] = torch.compile(unet, backend=_backend, dynamic=False)
        return compiled
