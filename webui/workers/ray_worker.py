"""Workers on Ray: each a Ray actor with its own Executor, model cache and device.

`RayWorkers` starts a local Ray runtime (one worker per local GPU, or N CPU workers) or joins a
cluster (`address`), where it places one worker on every GPU (one CPU worker on a node without
GPUs) and keeps up as nodes join and leave. The server keeps the queue, history and events; a job
travels to an actor with its workflow and input images (webui/workers/files.py), and the actor
streams back, in order, every event the executor sends, then the result, with saved images as bytes.

An actor runs jobs in one thread and answers `interrupt` in another (max_concurrency 2+), so
/interrupt and cancel reach a job on a remote worker. A killed actor is restarted by Ray
(max_restarts); the job it was running is lost with it and the queue requeues it (webui/jobs.py).
"""
from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import Emit, Warn, Worker, WorkerLost, WorkRequest, WorkResult
from .files import ReceivedFiles, input_files

log = logging.getLogger(__name__)

ACTOR_CONCURRENCY = 4  # the job's thread, plus interrupt / describe / free calls while it runs
DESCRIBE_TIMEOUT_S = 600  # an actor's first answer waits for torch and the nodes to import
POLL_SECONDS = 5.0  # how often a cluster's nodes are checked for joins and departures
# Ray's switch for multi-node clusters (on by default on Linux): off, a node's address is 127.0.0.1
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ExecutorActor:
    """Runs in the actor's process: one Executor, its model cache, its own folders."""

    def __init__(self, name: str, models_dir: str | None, extra_model_paths: str | None,
                 max_pixels: int | None, cpu_only: bool, device_options: dict | None = None):
        if cpu_only:  # before torch is imported: a CPU worker leaves the GPUs to the GPU workers
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        from ..serve_options import apply_device_options

        apply_device_options(**(device_options or {}))  # the server's --vram, --precision, ... on this worker
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from ...nodes import folders
        from ...nodes.executor import Executor
        from ...nodes.registry import core_nodes

        work = Path(tempfile.mkdtemp(prefix=f"inkwash-worker-{name}-"))
        self.folders = folders.configure(models_dir=models_dir, output_dir=work / "output", input_dir=work / "input",
                                         temp_dir=work / "temp", extra_model_paths=extra_model_paths)
        for path in (self.folders.output_dir, self.folders.input_dir, self.folders.temp_dir):
            path.mkdir(parents=True, exist_ok=True)
        from ...nodes.runtime import memory_manager

        self.executor = Executor(core_nodes())
        self.executor.max_pixels = max_pixels
        memory_manager.shared().watch(self.executor)
        self.name = name
        self.incarnation = uuid.uuid4().hex  # a restarted actor is a new one: its files are new files

    def describe(self) -> dict:
        import ray

        from .base import local_device_stats

        return {"device": local_device_stats(), "incarnation": self.incarnation, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(), "cached_nodes": self.executor.cache_size}

    def run(self, request: WorkRequest):
        """Yields ("start", incarnation), ("event", name, data) and ("warning", message) items as the
        job runs, then ("result", WorkResult) or ("failed", message)."""
        from .files import with_contents, write_inputs
        from .in_process import run_on

        write_inputs(request.input_files, self.folders.input_dir)
        items: queue.Queue = queue.Queue()

        def emit(name: str, data: dict) -> None:
            if name == "executed":
                data = {**data, "output": with_contents(data.get("output") or {}, self.folders)}
            items.put(("event", name, data))

        def work() -> None:
            try:
                result = run_on(self.executor, request, emit, lambda message: items.put(("warning", message)))
                result.outputs = {node: with_contents(ui, self.folders) for node, ui in result.outputs.items()}
                items.put(("result", result))
            except BaseException as exc:  # reported to the server as a failure outside the nodes
                items.put(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exception(exc)))

        yield ("start", self.incarnation)
        threading.Thread(target=work, name=f"inkwash-job-{request.job_id}", daemon=True).start()
        while True:
            item = items.get()
            yield item
            if item[0] in ("result", "failed"):
                return

    def interrupt(self) -> None:
        self.executor.interrupt()

    def free_memory(self) -> None:
        from .in_process import free_models

        free_models(self.executor)


class RayWorker(Worker):
    """The server's side of one actor."""

    remote = True

    def __init__(self, name: str, actor: Any, registry, folders, node_id: str | None = None):
        super().__init__()
        self.name = name
        self.actor = actor
        self.registry = registry
        self.folders = folders
        self.node_id = node_id
        self.gone = False  # its node left the cluster
        self.received = ReceivedFiles(folders)
        self._described: dict = {}
        self._freeing = None  # a free_memory call on its way: the next job waits for it

    def wait_ready(self, timeout: float = DESCRIBE_TIMEOUT_S) -> dict:
        """The actor's description, once it answers (a restarting actor is asked again until then)."""
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + timeout
        while True:
            try:
                self._described = ray.get(self.actor.describe.remote(), timeout=max(deadline - time.monotonic(), 0))
                return self._described
            except ActorUnavailableError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def run(self, request: WorkRequest, emit: Emit, warn: Warn) -> WorkResult:
        import ray
        from ray.exceptions import RayActorError

        request.input_files = input_files(request.workflow, self.registry, self.folders.input_dir)
        incarnation = ""
        try:
            if self._freeing is not None:
                freeing, self._freeing = self._freeing, None
                ray.get(freeing, timeout=120)
            for ref in self.actor.run.options(num_returns="streaming").remote(request):
                kind, *item = ray.get(ref)
                if kind == "start":
                    incarnation = item[0]
                elif kind == "event":
                    name, data = item
                    if name == "executed":
                        data = {**data, "output": self.received.store(data.get("output") or {}, incarnation)}
                    emit(name, data)
                elif kind == "warning":
                    warn(item[0])
                elif kind == "result":
                    result: WorkResult = item[0]
                    result.outputs = {node: self.received.store(ui, incarnation) for node, ui in result.outputs.items()}
                    if result.status == "invalid" and result.invalid:
                        error = result.invalid.get("error") or {}
                        error["details"] = f"{error.get('details', '')} (on worker {self.name})".strip()
                    return result
                elif kind == "failed":
                    raise RuntimeError(f"worker {self.name}: {item[0]}")
        except RayActorError as exc:
            raise WorkerLost(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        raise WorkerLost("the worker's stream ended without a result")

    def wait_until_back(self) -> None:
        try:  # Ray restarts the actor (max_restarts); its first answer says it is up again
            self.wait_ready()
        except Exception:  # gone for good (its node left, or it cannot start again)
            log.warning("worker %s did not come back", self.name, exc_info=True)
            self.gone = True

    def interrupt(self) -> None:
        self.actor.interrupt.remote()

    def free_memory(self) -> None:
        self._freeing = self.actor.free_memory.remote()  # not waited for here: the queue's lock is held

    def device(self) -> dict:
        try:
            self.wait_ready(timeout=5)
        except Exception:  # restarting or gone: what it last said, so /system_stats still answers
            log.info("worker %s did not describe itself", self.name, exc_info=True)
        return dict(self._described.get("device") or {"name": "unreachable", "type": "unknown", "index": None,
                                                       "vram_total": 0, "vram_free": 0, "torch_vram_total": 0,
                                                       "torch_vram_free": 0})

    @property
    def alive(self) -> bool:
        return not self.gone

    def close(self) -> None:
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # already gone, or Ray already shut down
            pass


@dataclass
class RayOptions:
    address: str | None = None  # None: a local runtime; "auto" or HOST:PORT: join that cluster
    workers: int | None = None  # local CPU workers (None: one per local GPU, or one when there is none)
    models_dir: str | None = None  # where workers look for models (None: their installation's models/)
    extra_model_paths: str | None = None
    max_pixels: int | None = None
    object_store_bytes: int | None = None  # local runtime only (None: Ray's default)
    device_options: dict = field(default_factory=dict)  # serve_options.apply_device_options' arguments
    poll_seconds: float = POLL_SECONDS


class RayWorkers:
    """The Ray runtime and the workers on it, kept in step with the cluster's nodes."""

    def __init__(self, options: RayOptions, registry, folders):
        self.options = options
        self.registry = registry
        self.folders = folders
        self.workers: list[RayWorker] = []
        self._queue = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- starting --------------------------------------------------------------------------------------
    def start(self) -> list[RayWorker]:
        """Start or join Ray and bring up the first workers (waits until each has loaded the nodes)."""
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")  # these are read when Ray is imported
        if not self.options.address:  # a local runtime on 127.0.0.1, not on this machine's network address
            os.environ.setdefault(LOOPBACK_ONLY, "0")
        if self.options.address and "RAY_AUTH_MODE" not in os.environ and (
                os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").is_file()):
            os.environ["RAY_AUTH_MODE"] = "token"  # `ray start` left this machine the cluster's token
        import ray

        if self.options.address:
            ray.init(address=self.options.address, log_to_driver=False)
            self._reconcile()
        else:
            gpus = 0 if self.options.workers else _local_gpus()
            count = self.options.workers or gpus or 1
            ray.init(num_cpus=max(count, os.cpu_count() or 1), num_gpus=gpus, include_dashboard=False,
                     object_store_memory=self.options.object_store_bytes, _node_ip_address="127.0.0.1",
                     log_to_driver=False)
            for index in range(count):
                self._add(f"ray-{index}", gpu=bool(gpus), node_id=None)
        for worker in self.workers:
            worker.wait_ready()
        return list(self.workers)

    def attach(self, job_queue) -> None:
        """Follow the cluster for this queue: workers on nodes that join are added, those on nodes
        that leave are removed (a local runtime has nothing to follow)."""
        self._queue = job_queue
        if self.options.address and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="inkwash-ray-nodes", daemon=True)
            self._watcher.start()

    def shutdown(self) -> None:
        import ray

        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        for worker in self.workers:
            worker.close()
        ray.shutdown()

    # -- the workers -----------------------------------------------------------------------------------
    def _add(self, name: str, gpu: bool, node_id: str | None) -> RayWorker:
        import ray

        options: dict = {"max_concurrency": ACTOR_CONCURRENCY, "max_restarts": -1, "max_task_retries": 0,
                         "num_cpus": 1, "num_gpus": 1 if gpu else 0}
        if node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        actor = ray.remote(ExecutorActor).options(**options).remote(
            name, self.options.models_dir, self.options.extra_model_paths, self.options.max_pixels, not gpu,
            self.options.device_options)
        worker = RayWorker(name, actor, self.registry, self.folders, node_id=node_id)
        self.workers.append(worker)
        return worker

    def _reconcile(self) -> tuple[list[RayWorker], list[RayWorker]]:
        """Workers for nodes that joined, and the workers of nodes that left: (added, removed)."""
        alive = {node["NodeID"]: node for node in self._nodes() if node.get("Alive")}
        with self._lock:
            removed = [w for w in self.workers if w.node_id not in alive or w.gone]
            for worker in removed:
                worker.gone = True
                self.workers.remove(worker)
            added = []
            for node_id, node in alive.items():
                gpus = int(node.get("Resources", {}).get("GPU", 0))
                have = [w for w in self.workers if w.node_id == node_id]
                for index in range(len(have), max(gpus, 1)):
                    kind = "gpu" if gpus else "cpu"
                    added.append(self._add(f"ray-{node['NodeManagerAddress']}-{kind}{index}", gpu=bool(gpus),
                                           node_id=node_id))
        return added, removed

    @staticmethod
    def _nodes() -> list[dict]:
        import ray

        return ray.nodes()

    def _watch(self) -> None:
        while not self._stop.wait(self.options.poll_seconds):
            try:
                added, removed = self._reconcile()
                for worker in removed:
                    log.info("worker %s left with its node", worker.name)
                    self._queue.remove_worker(worker)
                for worker in added:
                    worker.wait_ready()
                    log.info("worker %s joined", worker.name)
                    self._queue.add_worker(worker)
            except Exception:  # the cluster is restarting; try again at the next poll
                log.warning("could not follow the Ray cluster's nodes", exc_info=True)


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0
