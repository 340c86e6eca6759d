"""Where every model's weights are, and the only code that moves them.

The master copy of each model's weights lives in RAM (pinned on CUDA, so copies to the GPU are
fast). A node asks for the models it runs for the duration of its work, with an estimate of the
activation memory its shapes need:

    with memory_manager.using([model.unet, *controlnets], activation_bytes=estimate) as device:
        ...  # the models' weights are on `device`; put the inputs there too

The manager makes room by moving cached intermediates (LATENT, IMAGE, CONDITIONING outputs in an
executor's cache) and then the least recently used idle models back to RAM, and keeps models on the
device between jobs while they fit, so a seed-only re-run moves no weights. A model that does not fit
even then is streamed: diffusers' group offloading keeps its weights in RAM and moves one block at a
time to the device (on CUDA overlapped with compute on a side stream).

Moving a model back to RAM copies nothing: its parameters point at their master tensors again and
the device copies are freed. (A change made in place to the weights on the device is therefore not
kept; LoRA patches are put back before a model is released.)

Modes (`--vram`), as ComfyUI's --highvram/--normalvram/--lowvram/--novram and A1111's --lowvram:
  auto    normal on a GPU, cpu without one (the default)
  high    every model stays on the device once loaded; nothing is moved back or streamed
  normal  least recently used models go back to RAM when room is needed; a model that alone does
          not fit is streamed
  low     the UNet and ControlNets are always streamed; the text encoder and VAE are on the device
          only while they run
  cpu     everything runs on the CPU in float32

The device is a parameter: `GpuDevice` (free memory from torch.cuda.mem_get_info, capped by
--vram-budget), `CpuDevice`, and `SimulatedDevice` (a capacity in bytes that computes on the CPU,
so tests check the manager's decisions without a GPU).
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from ..device_choices import VRAM_MODES
from . import devices
from .model_types import Cond, ControlHint

log = logging.getLogger(__name__)

MODES = VRAM_MODES
GIB = 2 ** 30
# Room CUDA needs besides what torch allocates (cuDNN workspaces, fragmentation); ComfyUI keeps about as much.
CUDA_RESERVE = 512 * 2 ** 20

RAM, DEVICE, STREAMED = "ram", "device", "streamed"


# -- devices ----------------------------------------------------------------------------------------------

class CpuDevice:
    """The CPU: weights are already where they run, nothing is moved or counted."""

    torch_device = torch.device("cpu")
    separate = False  # holds no weights of its own

    def free_bytes(self, placed: int) -> int:
        return sys.maxsize

    def __repr__(self) -> str:
        return "CpuDevice()"


class SimulatedDevice:
    """A device of `capacity` bytes that computes on the CPU: the manager keeps its books exactly as
    for a GPU (weights counted on and off it, moves recorded) while tensors stay in RAM."""

    torch_device = torch.device("cpu")
    separate = True

    def __init__(self, capacity: int):
        self.capacity = int(capacity)

    def free_bytes(self, placed: int) -> int:
        return self.capacity - placed

    def __repr__(self) -> str:
        return f"SimulatedDevice({self.capacity})"


class GpuDevice:
    """A GPU. Free memory is what the driver reports plus what torch holds unused, less a reserve;
    with a budget, also no more than the budget less what the manager has placed."""

    separate = True

    def __init__(self, torch_device: torch.device | str = "cuda", budget: int | None = None):
        self.torch_device = torch.device(torch_device)
        self.budget = budget

    def free_bytes(self, placed: int) -> int:
        if self.torch_device.type == "mps":  # unified memory: the budget or what Metal recommends
            limit = self.budget or torch.mps.recommended_max_memory()
            return limit - placed
        free, _ = torch.cuda.mem_get_info(self.torch_device)
        unused = torch.cuda.memory_reserved(self.torch_device) - torch.cuda.memory_allocated(self.torch_device)
        real = free + unused - CUDA_RESERVE
        return real if self.budget is None else min(real, self.budget - placed)

    def __repr__(self) -> str:
        return f"GpuDevice({str(self.torch_device)!r}, budget={self.budget})"


def device_for(mode: str, budget: int | None = None):
    """The device a mode runs on: the GPU (or Apple's MPS) unless the mode is cpu or there is none."""
    accelerator = devices.default_device()
    if mode == "cpu" or accelerator.type == "cpu":
        if budget is not None and mode != "cpu":
            log.warning("--vram-budget is ignored: there is no GPU, models run on the CPU")
        return CpuDevice()
    return GpuDevice(accelerator, budget)


# -- records ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Move:
    """One change of where weights (or a cached output) are: to "device", "ram" or "streamed"."""

    what: str  # the model's name, or "intermediate"
    to: str
    bytes: int


@dataclass(frozen=True)
class Snapshot:
    """What is where while a `using` body runs (given to listeners as the body starts)."""

    wanted: tuple[str, ...]  # the models this body runs
    resident: tuple[str, ...]  # every model whose weights are all on the device
    streamed: tuple[str, ...]  # models streamed in groups of blocks
    placed_bytes: int  # weights and cached outputs the manager has on the device
    activation_bytes: int


class _Entry:
    """The manager's record of one module."""

    def __init__(self, module: torch.nn.Module, name: str, on_gone: Callable):
        self.ref = weakref.ref(module, on_gone)
        self.name = name
        self.masters: dict[torch.Tensor, torch.Tensor] = {}  # parameter or buffer -> its RAM tensor
        self.state = RAM
        self.users = 0
        self.bytes = 0
        self.stream_bytes = 0  # what streaming keeps on the device at a time
        self.attention_set = False

    @property
    def module(self) -> torch.nn.Module | None:
        return self.ref()


def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in _tensors(module)}.values())


def modules_in(value: Any) -> list[torch.nn.Module]:
    """The torch modules in a model value (a module, MODEL/CLIP/VAE/CONTROL_NET dataclasses, lists of
    them), each once, in order; modules inside modules are not listed apart."""
    found: dict[int, torch.nn.Module] = {}
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, torch.nn.Module):
            found.setdefault(id(item), item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item) if f.name != "lora_patches")
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return list(found.values())


def _is_denoiser(module: torch.nn.Module) -> bool:
    from diffusers import ControlNetModel, UNet2DConditionModel

    return isinstance(module, (UNet2DConditionModel, ControlNetModel))


# -- the manager ------------------------------------------------------------------------------------------

class MemoryManager:
    def __init__(self, device=None, mode: str = "auto"):
        self._lock = threading.RLock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        self._caches: list[weakref.ref] = []  # executors whose cached outputs may be moved to RAM
        self._spilled: dict[int, weakref.ref] = {}  # cached entries already moved to RAM
        self._warned_streaming = False
        self.moves: list[Move] = []
        self.listeners: list[Callable[[Snapshot], None]] = []
        self.mode = "auto"
        self.device = CpuDevice()
        self.configure(mode, device=device)

    # -- configuration -----------------------------------------------------------------------------------
    def configure(self, mode: str = "auto", budget_bytes: int | None = None, device=None) -> None:
        """Set the mode and the device (default: the one the mode runs on, with `budget_bytes`).
        Every model goes back to RAM first."""
        if mode not in MODES:
            raise ValueError(f"unknown vram mode {mode!r}; known: {', '.join(MODES)}")
        with self._lock:
            self.release_all()
            self.mode = mode
            self.device = device if device is not None else device_for(mode, budget_bytes)
            self._warned_streaming = False

    @property
    def torch_device(self) -> torch.device:
        return self.device.torch_device

    def dtype(self) -> torch.dtype:
        """The precision models are loaded in for this device."""
        return devices.default_dtype(self.torch_device)

    def watch(self, executor) -> None:
        """Let the manager move `executor`'s cached outputs to RAM when it needs room (they are then
        used from RAM, never recomputed). The executor must offer `cached_entries()`."""
        with self._lock:
            if not any(ref() is executor for ref in self._caches):
                self._caches.append(weakref.ref(executor))

    # -- asking for models -------------------------------------------------------------------------------
    @contextmanager
    def using(self, models: Any, activation_bytes: int = 0):
        """The models in `models` on the device (or streamed) for the body; yields the torch device
        their inputs go to. While the body runs they are not moved."""
        modules = modules_in(models)
        with self._lock:
            entries = [self._entry(m) for m in modules]
            for entry in entries:
                entry.users += 1
                self._entries.move_to_end(id(entry.module))
        try:
            with self._lock:
                if self.device.separate:
                    self._place(entries, activation_bytes)
                snapshot = self._snapshot(entries, activation_bytes)
            for listener in list(self.listeners):
                listener(snapshot)
            yield self.torch_device
        finally:
            with self._lock:
                for entry in entries:
                    entry.users -= 1
                if self.mode == "low":  # text encoders and VAEs are on the device only while they run
                    for entry in entries:
                        if entry.users == 0 and entry.state == DEVICE:
                            self._to_ram(entry)

    def free_memory(self, bytes_needed: int, keep: Any = ()) -> bool:
        """Make `bytes_needed` free on the device (moving cached outputs, then idle models, to RAM),
        keeping the models in `keep`; whether that much is now free."""
        with self._lock:
            if not self.device.separate:
                return True
            kept = {id(m) for m in modules_in(keep)}
            self._make_room(bytes_needed, kept)
            return self._free() >= bytes_needed

    def fits(self, models: Any, activation_bytes: int = 0) -> bool:
        """Whether `models` whole and `activation_bytes` would fit on the device once every idle model and
        cached output had been moved off (e.g. to choose a tiled VAE decode before trying a whole one)."""
        with self._lock:
            if not self.device.separate:
                return True
            wanted = {id(m): m for m in modules_in(models)}
            movable = sum(e.bytes for key, e in self._entries.items()
                          if key not in wanted and e.users == 0 and e.state == DEVICE)
            missing = sum(module_bytes(m) for key, m in wanted.items()
                          if key not in self._entries or self._entries[key].state != DEVICE)
            return missing + activation_bytes <= self._free() + movable + self._intermediate_bytes()

    def release_all(self) -> None:
        """Every model back in RAM (streaming undone) and every cached output off the device."""
        with self._lock:
            for entry in list(self._entries.values()):
                if entry.users == 0 and entry.state != RAM:
                    self._to_ram(entry)
            self._spill(sys.maxsize)

    def where(self, model: Any) -> str:
        """RAM, DEVICE or STREAMED for a module (a model value: its first module)."""
        modules = modules_in(model)
        entry = self._entries.get(id(modules[0])) if modules else None
        return entry.state if entry is not None else RAM

    def resident(self) -> list[str]:
        return [e.name for e in self._entries.values() if e.state == DEVICE]

    def placed_bytes(self) -> int:
        """Weights and cached outputs the manager has on the device now."""
        with self._lock:
            return self._placed()

    # -- decisions ---------------------------------------------------------------------------------------
    def _place(self, entries: list[_Entry], activation: int) -> None:
        for entry in entries:
            module = entry.module
            entry.bytes = module_bytes(module)
            entry.stream_bytes = _stream_bytes(module)
        wanted = {id(e.module) for e in entries}
        if self.mode == "high":  # everything stays: load what is missing, whole
            for entry in entries:
                if entry.state != DEVICE:
                    self._to_device(entry)
            return
        streamed = [e for e in entries if self.mode == "low" and _is_denoiser(e.module)]
        whole = [e for e in entries if e not in streamed]

        def need() -> int:
            return (sum(e.bytes for e in whole if e.state != DEVICE)
                    + sum(e.stream_bytes for e in streamed) + activation)

        self._make_room(need(), wanted)
        # what still does not fit is streamed, the largest model first
        for entry in sorted((e for e in whole if e.state != DEVICE), key=lambda e: e.bytes, reverse=True):
            if need() <= self._free():
                break
            whole.remove(entry)
            streamed.append(entry)
        for entry in whole:
            if entry.state != DEVICE:
                self._to_device(entry)
        for entry in streamed:
            if entry.state != STREAMED:
                self._stream(entry, self._free() - activation)

    def _make_room(self, bytes_needed: int, keep: set[int]) -> None:
        """Cached outputs first (small, and cheap to bring back), then idle models, least recently used
        first, until `bytes_needed` is free."""
        shortfall = bytes_needed - self._free()
        if shortfall > 0:
            self._spill(shortfall)
        for key, entry in list(self._entries.items()):
            if self._free() >= bytes_needed:
                return
            if key not in keep and entry.users == 0 and entry.state == DEVICE:
                self._to_ram(entry)

    def _free(self) -> int:
        return self.device.free_bytes(self._placed())

    def _placed(self) -> int:
        return sum(e.bytes for e in self._entries.values() if e.state == DEVICE) + self._intermediate_bytes()

    def _snapshot(self, entries: list[_Entry], activation: int) -> Snapshot:
        by_state = lambda state: tuple(e.name for e in self._entries.values() if e.state == state)  # noqa: E731
        return Snapshot(tuple(e.name for e in entries), by_state(DEVICE), by_state(STREAMED),
                        self._placed() if self.device.separate else 0, activation)

    # -- moves -------------------------------------------------------------------------------------------
    def _entry(self, module: torch.nn.Module) -> _Entry:
        entry = self._entries.get(id(module))
        if entry is not None and entry.module is module:
            return entry
        key = id(module)
        entry = _Entry(module, type(module).__name__, lambda _ref: self._forget(key))
        entry.bytes = module_bytes(module)
        tensors = _tensors(module)
        if self.device.separate and tensors and tensors[0].device.type == self.torch_device.type \
                and self.torch_device.type != "cpu":
            entry.state = DEVICE  # it came already on the device; RAM copies are made when it leaves
        elif self.torch_device.type == "cuda":
            _pin(tensors)
        self._entries[key] = entry
        return entry

    def _forget(self, key: int) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def _to_device(self, entry: _Entry) -> None:
        module = entry.module
        if entry.state == STREAMED:
            self._unstream(entry)
        target = self.torch_device
        with torch.no_grad():
            for tensor in _tensors(module):
                if tensor.device.type == "cpu":
                    entry.masters[tensor] = tensor.data  # (re)taken here: a conversion in RAM is kept
                tensor.data = tensor.data.to(target, non_blocking=tensor.data.is_pinned())
        if not entry.attention_set and hasattr(module, "attn_processors") and target.type == "cuda":
            devices.set_attention(module)  # xformers is chosen only for a model on CUDA
            entry.attention_set = True
        entry.state = DEVICE
        self.moves.append(Move(entry.name, DEVICE, entry.bytes))

    def _to_ram(self, entry: _Entry) -> None:
        module = entry.module
        if entry.state == STREAMED:
            self._unstream(entry)
            entry.state = RAM
            return
        with torch.no_grad():
            for tensor in _tensors(module):
                master = entry.masters.get(tensor)
                if master is None or master.dtype != tensor.dtype or master.shape != tensor.shape:
                    master = _to_pinned_ram(tensor.data) if self.torch_device.type == "cuda" \
                        else tensor.data.to("cpu")  # converted on the device: that version is kept
                    entry.masters[tensor] = master
                tensor.data = master
        entry.state = RAM
        self.moves.append(Move(entry.name, RAM, entry.bytes))

    def _stream(self, entry: _Entry, free: int) -> None:
        """diffusers' group offloading: blocks move to the device one group at a time as they run."""
        from diffusers.hooks import apply_group_offloading

        if entry.state == DEVICE:
            self._to_ram(entry)
        cuda = self.torch_device.type == "cuda"
        blocks = _offload_type(entry.module) == "block_level"
        apply_group_offloading(entry.module, onload_device=self.torch_device, offload_device=torch.device("cpu"),
                               offload_type=_offload_type(entry.module), num_blocks_per_group=1 if blocks else None,
                               use_stream=cuda, record_stream=cuda)
        entry.state = STREAMED
        self.moves.append(Move(entry.name, STREAMED, entry.bytes))
        if not self._warned_streaming:
            self._warned_streaming = True
            why = "--vram low" if self.mode == "low" else \
                f"{entry.name} ({_gib(entry.bytes)}) does not fit in the free device memory ({_gib(max(free, 0))})"
            log.warning("%s: sampling with offloaded weights: slower", why)

    def _unstream(self, entry: _Entry) -> None:
        from diffusers.hooks import group_offloading
        from diffusers.hooks.hooks import HookRegistry

        module = entry.module
        registry = HookRegistry.check_if_exists_or_initialize(module)
        for name in (group_offloading._GROUP_OFFLOADING, group_offloading._LAYER_EXECUTION_TRACKER,
                     group_offloading._LAZY_PREFETCH_GROUP_OFFLOADING):
            registry.remove_hook(name, recurse=True)
        with torch.no_grad():
            for tensor in _tensors(module):
                master = entry.masters.get(tensor)
                if master is not None and master.dtype == tensor.dtype and master.shape == tensor.shape:
                    tensor.data = master
                elif tensor.device.type != "cpu":
                    tensor.data = tensor.data.to("cpu")

    # -- cached outputs ----------------------------------------------------------------------------------
    def _cached_entries(self) -> Iterable:
        alive = []
        for ref in self._caches:
            executor = ref()
            if executor is not None:
                alive.append(ref)
                yield from executor.cached_entries()
        self._caches[:] = alive

    def _on_device(self, cached) -> bool:
        spilled = self._spilled.get(id(cached))
        return spilled is None or spilled() is not cached

    def _intermediate_bytes(self) -> int:
        if not self._caches:
            return 0
        kind = self.torch_device.type
        return sum(t.numel() * t.element_size() for cached in list(self._cached_entries()) if self._on_device(cached)
                   for t in intermediate_tensors(cached.outputs) if t.device.type == kind)

    def _spill(self, bytes_needed: int) -> None:
        """Move cached outputs to RAM, oldest first, until `bytes_needed` are freed."""
        freed = 0
        kind = self.torch_device.type
        for cached in list(self._cached_entries()):
            if freed >= bytes_needed:
                return
            if not self._on_device(cached):
                continue
            size = sum(t.numel() * t.element_size() for t in intermediate_tensors(cached.outputs)
                       if t.device.type == kind)
            if size == 0:
                continue
            cached.outputs = tuple(to_ram(value) for value in cached.outputs)
            self._spilled[id(cached)] = weakref.ref(cached)
            self.moves.append(Move("intermediate", RAM, size))
            freed += size


# -- cached outputs: the tensors of LATENT, IMAGE, MASK and CONDITIONING values ---------------------------

def intermediate_tensors(value: Any) -> Iterable[torch.Tensor]:
    """The tensors of a node output that is data (a tensor, a LATENT dict, a CONDITIONING list of Conds
    with their hint images); models and anything else have none."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from intermediate_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from intermediate_tensors(item)
    elif isinstance(value, Cond):
        yield from intermediate_tensors([value.embeds, value.pooled, value.extra])
        for hint in value.controls:
            yield from intermediate_tensors(hint.image)


def to_ram(value: Any) -> Any:
    """A copy of a node output with its tensors in RAM (what `intermediate_tensors` finds)."""
    if isinstance(value, torch.Tensor):
        return value.to("cpu")
    if isinstance(value, dict):
        return {key: to_ram(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_ram(item) for item in value)
    if isinstance(value, Cond):
        return dataclasses.replace(value, embeds=to_ram(value.embeds), pooled=to_ram(value.pooled),
                                   extra=to_ram(value.extra), controls=[_hint_to_ram(h) for h in value.controls])
    return value


def _hint_to_ram(hint: ControlHint) -> ControlHint:
    return dataclasses.replace(hint, image=to_ram(hint.image))


# -- sizes -------------------------------------------------------------------------------------------------

def _offload_type(module: torch.nn.Module) -> str:
    """diffusers models stream by blocks (their top-level block lists, or the blocks they name); others
    (transformers' text encoders, whose layers sit one level down) leaf by leaf."""
    from diffusers import ModelMixin

    return "block_level" if isinstance(module, ModelMixin) else "leaf_level"


def _stream_bytes(module: torch.nn.Module) -> int:
    """What group offloading holds on the device at once. Block level: the modules outside the blocks
    (on the device for the whole forward) plus the largest block; leaf level: the largest leaf."""
    if _offload_type(module) == "leaf_level":
        return max((module_bytes(m) for m in module.modules() if not list(m.children())), default=0)
    return _block_stream_bytes(module, set(getattr(module, "_group_offload_block_modules", None) or ()))


def _block_stream_bytes(module: torch.nn.Module, named: set[str]) -> int:
    outside, largest = 0, 0
    for name, child in module.named_children():
        if name in named:  # offloaded by blocks in turn
            largest = max(largest, _block_stream_bytes(child, named))
        elif isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
            largest = max([largest, *(module_bytes(block) for block in child)])
        else:
            outside += module_bytes(child)
    return outside + largest


def _gib(size: int) -> str:
    return f"{size / GIB:.2f} GiB"


def _dtype_size(module: torch.nn.Module) -> int:
    first = next(module.parameters(), None)
    return first.element_size() if first is not None else 4


def unet_activation_bytes(unet: torch.nn.Module, latent_shape: tuple, rows: int = 2) -> int:
    """Activation memory of one UNet call on `rows` copies (conds) of a [B,C,h,w] latent: ComfyUI's
    estimate (0.01 MiB per latent pixel and byte of precision for SD-width UNets), scaled by width."""
    batch, _, height, width = latent_shape
    scale = unet.config.block_out_channels[0] / 320
    return int(rows * batch * height * width * _dtype_size(unet) * 0.01 * 2 ** 20 * scale)


def text_activation_bytes(encoders: Iterable[torch.nn.Module], windows: int = 1) -> int:
    """Activation memory of encoding `windows` 77-token windows: hidden states of every layer, kept."""
    return sum(windows * 77 * e.config.hidden_size * (e.config.num_hidden_layers + 2) * 4 * _dtype_size(e)
               for e in encoders)


# -- RAM ---------------------------------------------------------------------------------------------------

def _pin(tensors: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for tensor in tensors:
            if tensor.device.type == "cpu" and not tensor.is_pinned():
                tensor.data = tensor.data.pin_memory()


def _to_pinned_ram(tensor: torch.Tensor) -> torch.Tensor:
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=True)
    return pinned.copy_(tensor)


# -- the process-wide manager --------------------------------------------------------------------------------

_shared = MemoryManager()


def shared() -> MemoryManager:
    """The manager every model-running node goes through."""
    return _shared


def using(models: Any, activation_bytes: int = 0):
    return _shared.using(models, activation_bytes)


def free_memory(bytes_needed: int, keep: Any = ()) -> bool:
    return _shared.free_memory(bytes_needed, keep)


def fits(models: Any, activation_bytes: int = 0) -> bool:
    return _shared.fits(models, activation_bytes)


def release_all() -> None:
    """Every model back in RAM and every cached output off the device (after an out-of-memory error)."""
    _shared.release_all()


def compute_device() -> torch.device:
    return _shared.torch_device


def configure(mode: str = "auto", budget_gb: float | None = None) -> None:
    """Apply `--vram MODE` and `--vram-budget GB` to the shared manager."""
    _shared.configure(mode, None if budget_gb is None else int(budget_gb * GIB))
    log.info("memory: --vram %s on %r", mode, _shared.device)
