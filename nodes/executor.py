"""Runs validated workflows: only what changed, with ComfyUI's events. Imports no torch.

Each node's outputs are cached under a signature made of its class, its fingerprint, its literal inputs
and its ancestors' signatures -- never node ids -- so renumbered or re-submitted graphs reuse results,
and changing a seed re-runs only the sampler and what is downstream of it. Cached values are kept as
the nodes returned them (tensors stay on their device).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import graph, out_of_memory
from .declare import Interrupted, Node, NodeContext, Result

EventSink = Callable[[str, dict], None]


class OutputTooLarge(ValueError):
    """A node would make an image or latent past the executor's `max_pixels`; refused before it runs."""


@dataclass
class CachedNode:
    outputs: tuple
    ui: dict


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success" | "error" | "interrupted" | "invalid"
    outputs: dict[str, dict] = field(default_factory=dict)  # node_id -> ui dict
    executed: list[str] = field(default_factory=list)  # node ids that actually ran
    cached: list[str] = field(default_factory=list)
    error: dict | None = None
    validation: graph.Validation | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _canonical(value: Any) -> Any:
    """A JSON-able stand-in for a literal, used only for hashing."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class Executor:
    """Validates and runs workflows against a registry of node classes, caching outputs between runs."""

    def __init__(self, registry: Mapping[str, type[Node]]):
        self.registry = registry
        self._cache: dict[str, CachedNode] = {}
        self._interrupt = threading.Event()
        # width x height x batch any node may make (None: no limit); checked before the node runs
        self.max_pixels: int | None = None

    # -- control -------------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Stop the running workflow at the next node boundary or sampler step."""
        self._interrupt.set()

    def clear_cache(self) -> None:
        self._cache.clear()

    def cached_entries(self) -> list[CachedNode]:
        """The cached results, oldest first. The memory manager (runtime/memory_manager.py) may replace an
        entry's `outputs` with copies in RAM when it needs device memory; they are never recomputed for it."""
        return list(self._cache.values())

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def validate(self, source) -> graph.Validation:
        return graph.validate(source, self.registry)

    # -- signatures ----------------------------------------------------------------------------------
    def signatures(self, validation: graph.Validation, order: list[str]) -> dict[str, str]:
        wf = validation.workflow
        sigs: dict[str, str] = {}
        for node_id in order:
            spec = wf.nodes[node_id]
            cls = self.registry[spec.class_type]
            literals = validation.values.get(node_id, {})
            try:
                fingerprint = cls.fingerprint(**literals)
            except Exception as exc:  # a failing fingerprint must force a re-run, not hide one
                fingerprint = f"unfingerprintable:{uuid.uuid4()}:{exc}"
            key = {
                "class": spec.class_type,
                "fingerprint": _canonical(fingerprint),
                "literals": _canonical(literals),
                "links": {name: [sigs[link.source], link.index] for name, link in sorted(spec.links.items())},
            }
            sigs[node_id] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return sigs

    # -- running -------------------------------------------------------------------------------------
    def execute(self, source, prompt_id: str | None = None, on_event: EventSink | None = None,
                extra_pnginfo: dict | None = None) -> RunResult:
        prompt_id = prompt_id or str(uuid.uuid4())
        emit = on_event or (lambda name, data: None)
        validation = source if isinstance(source, graph.Validation) else self.validate(source)
        if not validation.ok:
            return RunResult(prompt_id, "invalid", error=validation.error, validation=validation)
        self._interrupt.clear()
        wf = validation.workflow
        order = graph.execution_order(wf, validation.outputs)
        sigs = self.signatures(validation, order)
        result = RunResult(prompt_id, "success", validation=validation)

        emit("execution_start", {"prompt_id": prompt_id, "timestamp": _now_ms()})
        result.cached = [n for n in order if sigs[n] in self._cache]
        emit("execution_cached", {"nodes": result.cached, "prompt_id": prompt_id, "timestamp": _now_ms()})
        # Keep only what this workflow uses; everything else is released now, before new results arrive.
        wanted = set(sigs.values())
        for sig in list(self._cache):
            if sig not in wanted:
                del self._cache[sig]

        current: str | None = None
        try:
            for node_id in order:
                current = node_id
                cached = self._cache.get(sigs[node_id])
                if cached is not None:
                    if cached.ui:
                        emit("executed", {"node": node_id, "display_node": node_id, "output": cached.ui,
                                          "prompt_id": prompt_id})
                        result.outputs[node_id] = cached.ui
                    continue
                if self._interrupt.is_set():
                    raise Interrupted()
                emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
                entry = self._run_node(wf, validation, node_id, sigs, prompt_id, emit, extra_pnginfo)
                self._cache[sigs[node_id]] = entry
                result.executed.append(node_id)
                if entry.ui:
                    result.outputs[node_id] = entry.ui
                    emit("executed", {"node": node_id, "display_node": node_id, "output": entry.ui,
                                      "prompt_id": prompt_id})
        except Interrupted:
            result.status = "interrupted"
            self._interrupt.clear()
            spec = wf.nodes[current] if current else None
            emit("execution_interrupted", {"prompt_id": prompt_id, "node_id": current,
                                           "node_type": spec.class_type if spec else None,
                                           "executed": list(result.executed), "timestamp": _now_ms()})
            return result
        except Exception as exc:  # any node failure ends this run; the executor stays usable
            result.status = "error"
            spec = wf.nodes[current]
            result.error = {
                "prompt_id": prompt_id, "node_id": current, "node_type": spec.class_type,
                "executed": list(result.executed), "exception_message": str(exc) or type(exc).__name__,
                "exception_type": type(exc).__name__, "traceback": traceback.format_exception(exc),
                "current_inputs": {k: repr(v)[:200] for k, v in validation.values.get(current, {}).items()},
                "current_outputs": {}, "timestamp": _now_ms(),
            }
            out_of_device_memory = isinstance(exc, out_of_memory.OutOfDeviceMemory)
        if result.status == "error":
            if out_of_device_memory:  # now that the traceback and the failed node's tensors are gone
                out_of_memory.release_device_memory()
            emit("execution_error", result.error)
            return result
        emit("executing", {"node": None, "display_node": None, "prompt_id": prompt_id})
        emit("execution_success", {"prompt_id": prompt_id, "timestamp": _now_ms()})
        return result

    def _run_node(self, wf: graph.Workflow, validation: graph.Validation, node_id: str, sigs: dict[str, str],
                  prompt_id: str, emit: EventSink, extra_pnginfo: dict | None) -> CachedNode:
        spec = wf.nodes[node_id]
        cls = self.registry[spec.class_type]
        kwargs = dict(validation.values.get(node_id, {}))
        for name, link in spec.links.items():
            kwargs[name] = self._cache[sigs[link.source]].outputs[link.index]
        for decl in cls.inputs:  # optional inputs left out get their declared default
            if decl.name not in kwargs and decl.optional and decl.has_widget and decl.default is not None:
                kwargs[decl.name] = decl.default

        def on_progress(value: int, total: int, preview: Any) -> None:
            emit("progress", {"value": value, "max": total, "node": node_id, "prompt_id": prompt_id,
                              "preview": preview})

        if self.max_pixels is not None:
            pixels = cls.output_pixels(**kwargs)
            if pixels is not None and pixels > self.max_pixels:
                raise OutputTooLarge(f"{spec.class_type} would make {pixels} pixels (width x height x batch), "
                                     f"more than this server allows ({self.max_pixels})")
        ctx = NodeContext(node_id, prompt=validation.workflow.raw, extra_pnginfo=extra_pnginfo,
                          on_progress=on_progress, is_interrupted=self._interrupt.is_set)
        try:
            returned = cls(ctx).run(**kwargs)
        except Exception as exc:
            if not out_of_memory.is_out_of_memory(exc):
                raise
            failure = out_of_memory.describe(exc, node_id, spec.class_type, kwargs)
        else:
            failure = None
        if failure is not None:  # raised outside the handler: the original's frames (and tensors) go
            raise failure
        if isinstance(returned, Result):
            outputs, ui = tuple(returned.outputs), returned.ui
        else:
            outputs, ui = tuple(returned), {}
        if len(outputs) != len(cls.outputs):
            raise RuntimeError(f"{spec.class_type} returned {len(outputs)} outputs, declares {len(cls.outputs)}")
        return CachedNode(outputs, ui)
