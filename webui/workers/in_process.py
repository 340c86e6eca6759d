"""The default worker: the server's own Executor, run in the queue's thread (no copies, no transfer)."""
from __future__ import annotations

import sys

from ...nodes.executor import Executor
from ...nodes.runtime.latent_preview import previewing
from ..node_warnings import node_warnings
from .base import Emit, Warn, Worker, WorkRequest, WorkResult, local_device_stats


def run_on(executor: Executor, request: WorkRequest, emit: Emit, warn: Warn) -> WorkResult:
    """One job on `executor`, in this thread: what every worker does where it runs."""
    with node_warnings(warn), previewing(request.preview_method):
        result = executor.execute(request.workflow, prompt_id=request.job_id, on_event=emit,
                                  extra_pnginfo=request.extra_pnginfo)
    invalid = result.validation.response() if result.status == "invalid" and result.validation else None
    return WorkResult(result.status, result.outputs, result.error, invalid)


def free_models(executor: Executor) -> None:
    """Drop an executor's cached outputs and the process's loaded models (ComfyUI's /free)."""
    executor.clear_cache()
    if "torch" in sys.modules:  # no model can be loaded if torch never was
        from ...nodes.runtime import model_cache

        model_cache.shared().clear()


class InProcessWorker(Worker):
    name = "local"

    def __init__(self, executor: Executor):
        super().__init__()
        self.executor = executor

    def run(self, request: WorkRequest, emit: Emit, warn: Warn) -> WorkResult:
        return run_on(self.executor, request, emit, warn)

    def interrupt(self) -> None:
        self.executor.interrupt()

    def free_memory(self) -> None:
        free_models(self.executor)

    def device(self) -> dict:
        return local_device_stats()
