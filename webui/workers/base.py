"""The worker interface the job queue runs jobs through.

A worker runs one job at a time: `run` blocks until the job is over and calls `emit(event, data)` for
each executor event (ComfyUI's names and payloads, as the in-process executor sends them) and
`warn(message)` for each warning a node logs. A worker that is lost mid-job (its process killed, its
machine gone) raises WorkerLost, and the queue gives the job to another worker.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

Emit = Callable[[str, dict], None]
Warn = Callable[[str], None]


class WorkerLost(Exception):
    """The worker died while running a job; the job did not fail, its worker did."""


@dataclass
class WorkRequest:
    """Everything a job needs, carried with it: a remote worker shares no folder with the server."""

    job_id: str
    workflow: dict  # API format
    extra_pnginfo: dict | None = None
    preview_method: str = "auto"
    input_files: dict[str, bytes] = field(default_factory=dict)  # input-folder name -> content (remote workers)


@dataclass
class WorkResult:
    status: str  # success | error | interrupted | invalid
    outputs: dict = field(default_factory=dict)  # node id -> ui dict, naming files in the server's folders
    error: dict | None = None  # the executor's execution_error data
    invalid: dict | None = None  # status "invalid": ComfyUI's validation response


def job_checkpoints(workflow: Mapping) -> set[str]:
    """The checkpoint names a workflow loads (its `ckpt_name` inputs): what a warm worker may hold."""
    names = set()
    for node in workflow.values():
        value = (node.get("inputs") or {}).get("ckpt_name") if isinstance(node, Mapping) else None
        if isinstance(value, str):
            names.add(value)
    return names


class Worker(abc.ABC):
    """One place jobs run. `name` shows in the Queue tab and /system_stats; `remote` says whether
    jobs must carry their input images and bring their outputs back as bytes."""

    name: str = "worker"
    remote: bool = False

    def __init__(self) -> None:
        self.warm: set[str] = set()  # checkpoints the last jobs loaded: its model cache holds them

    @abc.abstractmethod
    def run(self, request: WorkRequest, emit: Emit, warn: Warn) -> WorkResult:
        """Run one job to its end; WorkerLost when the worker died under it."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Stop the running job at the next node boundary or sampler step (safe to call at any time)."""

    @abc.abstractmethod
    def free_memory(self) -> None:
        """Drop cached node outputs and loaded models (only called while the worker is idle)."""

    @abc.abstractmethod
    def device(self) -> dict:
        """The worker's device in /system_stats' shape (name, type, index, vram_total, vram_free, ...)."""

    @property
    def alive(self) -> bool:
        """False once the worker is gone for good (its node left the cluster): the queue drops it."""
        return True

    def wait_until_back(self) -> None:
        """After it was lost: block until the worker (restarted) can take jobs again."""

    def close(self) -> None:
        """Release what the worker holds (an actor, a process)."""


def local_device_stats() -> dict:
    """This process's torch device as ComfyUI's /system_stats lists a device. On the CPU (and Apple's
    shared memory) "VRAM" is the system RAM, as ComfyUI reports it."""
    import psutil
    import torch

    from ...nodes.runtime.devices import default_device

    memory = psutil.virtual_memory()
    device = default_device()
    name, vram_total, vram_free = str(device.type), memory.total, memory.available
    torch_total, torch_free = vram_total, vram_free
    if device.type == "cuda":
        index = torch.cuda.current_device()
        name = f"cuda:{index} {torch.cuda.get_device_name(index)}"
        vram_free, vram_total = torch.cuda.mem_get_info(index)
        torch_total = torch.cuda.memory_reserved(index)
        torch_free = torch_total - torch.cuda.memory_allocated(index)
        device = torch.device("cuda", index)
    return {"name": name, "type": device.type, "index": device.index, "vram_total": vram_total,
            "vram_free": vram_free, "torch_vram_total": torch_total, "torch_vram_free": torch_free}
