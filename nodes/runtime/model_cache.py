"""A small LRU cache of loaded models, bounded by the bytes of their weights.

An entry is keyed by the file's resolved path, modification time and size, plus a `variant` saying
how it was loaded (what, device, dtype), so an edited or replaced file is loaded afresh. Values are
shared: a caller that changes weights in place (patches, merges) must work on a copy.
"""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable

import torch

from ..formats.file_hashes import file_signature

# Loaded models live in RAM (the memory manager copies them to the GPU while they run): leave the
# other half for the rest of the process and the system.
DEFAULT_FRACTION = 0.5


def default_budget() -> int:
    return int(_total_ram() * DEFAULT_FRACTION)


def _total_ram() -> int:
    try:
        import psutil
    except ImportError:  # POSIX has it without psutil
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return psutil.virtual_memory().total


def weight_bytes(value: Any) -> int:
    """Bytes of parameters and buffers of every torch module inside `value` (dataclasses, tuples,
    lists and dicts are searched), each tensor counted once."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.nn.Module):
            for tensor in [*item.parameters(), *item.buffers()]:
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    total += tensor.numel() * tensor.element_size()
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return total


class ModelCache:
    def __init__(self, budget_bytes: int | None = None):
        self.budget = default_budget() if budget_bytes is None else budget_bytes
        # (path, variant) -> (file signature, value, weight bytes), least recently used first
        self._entries: OrderedDict[tuple, tuple[tuple, Any, int]] = OrderedDict()
        self._lock = threading.RLock()

    def get_or_load(self, key_path: str | Path, loader: Callable[[], Any], variant: Hashable = None) -> Any:
        """The cached value for this file and variant, or `loader()`'s result, cached. Loads hold the
        lock, so two requests for one model load it once."""
        signature = file_signature(key_path)
        slot = (signature[0], variant)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is not None and entry[0] == signature:
                self._entries.move_to_end(slot)
                return entry[1]
            self._drop(slot)
            value = loader()
            self._entries[slot] = (signature, value, weight_bytes(value))
            self._evict()
            return value

    @property
    def used_bytes(self) -> int:
        return sum(entry[2] for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every model, and give freed memory back (also what other caches just dropped: /free)."""
        with self._lock:
            self._entries.clear()
            _release()

    def _drop(self, slot: tuple) -> None:
        if self._entries.pop(slot, None) is not None:
            _release()

    def _evict(self) -> None:
        """Least recently used first, until within budget; the newest entry stays even if it alone
        is over (the caller needs it)."""
        evicted = False
        while self.used_bytes > self.budget and len(self._entries) > 1:
            del self._entries[next(iter(self._entries))]
            evicted = True
        if evicted:
            _release()


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim_heap()


def _trim_heap() -> None:
    """glibc keeps freed tensor memory in its arenas (RSS stays up): hand it back to the system."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_shared = ModelCache()


def shared() -> ModelCache:
    """The process-wide cache the loader nodes use."""
    return _shared
