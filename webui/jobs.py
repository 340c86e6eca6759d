"""The job queue every door shares: workflows wait in SQLite and one worker thread runs them in order.

JobStore keeps each job (workflow, status, outputs, error, messages) in one SQLite file, so the queue
and the history survive a restart; a job the process died in is run again on the next start (up to
MAX_ATTEMPTS times, so a job that kills the process cannot crash-loop the server). JobQueue validates
on submit, runs jobs on a single reused Executor (its cache makes seed-only re-runs fast), publishes
every event to the EventHub for the job's client, and tracks live progress for A1111's /progress.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..nodes import graph
from ..nodes.executor import Executor
from ..nodes.formats.preview_frames import ImageFrame
from ..nodes.runtime import memory_manager
from ..nodes.runtime.latent_preview import previewing
from . import preview_method
from .events import EventHub
from .node_warnings import node_warnings

log = logging.getLogger(__name__)

PENDING, RUNNING = "pending", "running"
SUCCESS, ERROR, INTERRUPTED, CANCELLED = "success", "error", "interrupted", "cancelled"
ACTIVE = (PENDING, RUNNING)
FINISHED = (SUCCESS, ERROR, INTERRUPTED)  # what ComfyUI's /history lists
DONE = FINISHED + (CANCELLED,)
MAX_ATTEMPTS = 3  # starts of one job the process may die in before it is marked failed
# A job whose extra data holds PREVIEW_METHOD_KEY: NO_PREVIEWS gets no sampler previews on the
# websocket (ComfyUI's default); the door that queues it decides (webui/preview_method.py).
PREVIEW_METHOD_KEY, NO_PREVIEWS = "preview_method", "none"


class DuplicateJobId(ValueError):
    """submit() was given a job id that a job in the store already has."""


class InvalidWorkflow(Exception):
    """submit() refused a workflow; `.response()` is ComfyUI's POST /prompt error body."""

    def __init__(self, validation: graph.Validation):
        error = validation.error or {}
        super().__init__(error.get("message", "invalid workflow"))
        self.validation = validation

    def response(self) -> dict:
        return self.validation.response()


@dataclass
class Job:
    id: str  # ComfyUI's prompt_id
    number: int | float  # queue position: lower runs first (a client may choose any number, as in ComfyUI)
    workflow: dict  # API format
    client_id: str | None
    extra: dict  # ComfyUI extra_data, plus "source"
    status: str  # pending | running | success | error | interrupted | cancelled
    created: float
    started: float | None = None
    finished: float | None = None
    outputs: dict = field(default_factory=dict)  # node_id -> ui dict
    error: dict | None = None  # the executor's execution_error data
    messages: list = field(default_factory=list)  # [[event, data], ...] as ComfyUI's status.messages
    output_nodes: list = field(default_factory=list)  # ComfyUI's outputs_to_execute

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def status_str(self) -> str:
        """ComfyUI's history status_str: an interrupted job counts as an error."""
        return "success" if self.status == SUCCESS else "error"

    @property
    def completed(self) -> bool:
        return self.status == SUCCESS


@dataclass
class Progress:
    """The running job's live state, for A1111's /progress."""

    job_id: str | None = None
    node: str | None = None
    value: int = 0
    max: int = 0
    preview: Any = None  # PIL.Image of the latest step that sent one
    started: float | None = None


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    number       NOT NULL,  -- no type, so an int stays an int and a client's 2.5 stays 2.5
    status       TEXT NOT NULL,
    workflow     TEXT NOT NULL,
    client_id    TEXT,
    extra        TEXT NOT NULL,
    output_nodes TEXT NOT NULL,
    created      REAL NOT NULL,
    started      REAL,
    finished     REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    outputs      TEXT NOT NULL DEFAULT '{}',
    error        TEXT,
    messages     TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, number);
CREATE INDEX IF NOT EXISTS jobs_by_finished ON jobs (finished, number);
-- last number given at the back ("back", counts up) and at the front ("front", counts down),
-- kept apart from the jobs so numbers are never reused after history is deleted
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _job_from_row(row: sqlite3.Row) -> Job:
    """A stored job; a corrupt column (not JSON, or NaN/Infinity stored before they were refused) is read
    as empty and reported in the job's error, so one bad row never breaks a listing."""
    corrupt: list[str] = []

    def stored(column: str, empty: Any) -> Any:
        def reported(name: str) -> None:  # NaN / Infinity read as null
            corrupt.append(f"{column} holds {name}")

        if not row[column]:
            return empty
        try:
            return json.loads(row[column], parse_constant=reported)
        except (ValueError, RecursionError):
            corrupt.append(f"{column} is not JSON")
            return empty

    job = Job(id=row["id"], number=row["number"], workflow=stored("workflow", {}),
              client_id=row["client_id"], extra=stored("extra", {}), status=row["status"],
              created=row["created"], started=row["started"], finished=row["finished"],
              outputs=stored("outputs", {}), error=stored("error", None), messages=stored("messages", []),
              output_nodes=stored("output_nodes", []))
    if corrupt:
        job.error = {**(job.error if isinstance(job.error, dict) else {}),
                     "exception_message": f"this job's stored record is corrupt: {'; '.join(corrupt)}",
                     "exception_type": "CorruptRecord"}
    return job


class JobStore:
    """Jobs in one SQLite file (WAL). One connection, serialised by a lock, serves every thread."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Databases from before client-chosen numbers had `number INTEGER NOT NULL UNIQUE`: rebuild
        the table (same columns, same rows) without the constraint."""
        row = self._conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        if row is None or "INTEGER NOT NULL UNIQUE" not in row[0]:
            return
        columns = "id, number, status, workflow, client_id, extra, output_nodes, created, started, finished," \
                  " attempts, outputs, error, messages"
        with self._transaction() as conn:
            conn.execute("ALTER TABLE jobs RENAME TO jobs_before_migration")
            conn.execute("DROP INDEX IF EXISTS jobs_by_status")
            conn.execute("DROP INDEX IF EXISTS jobs_by_finished")
            for statement in SCHEMA.split(";"):
                if "CREATE" in statement and "counters" not in statement:
                    conn.execute(statement)
            conn.execute(f"INSERT INTO jobs ({columns}) SELECT {columns} FROM jobs_before_migration")
            conn.execute("DROP TABLE jobs_before_migration")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing -------------------------------------------------------------------------------------
    def insert(self, workflow: dict, client_id: str | None, extra: dict, output_nodes: list[str],
               front: bool = False, job_id: str | None = None, number: int | float | None = None) -> Job:
        """Queue a job: `job_id` (None: a new UUID; DuplicateJobId when taken), `number` (None: the
        next number at the back, or at the front with `front`; otherwise that position, as ComfyUI)."""
        job = Job(id=job_id or str(uuid.uuid4()), number=0, workflow=workflow, client_id=client_id, extra=extra,
                  status=PENDING, created=time.time(), output_nodes=list(output_nodes))
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone() is not None:
                raise DuplicateJobId(f"a job with id {job.id!r} already exists")
            job.number = self._next_number(conn, front) if number is None else number
            conn.execute("INSERT INTO jobs (id, number, status, workflow, client_id, extra, output_nodes, created)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (job.id, job.number, job.status, json.dumps(workflow), client_id, json.dumps(extra),
                          json.dumps(job.output_nodes), job.created))
        return job

    @staticmethod
    def _next_number(conn: sqlite3.Connection, front: bool) -> int:
        name, step = ("front", -1) if front else ("back", 1)
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        if row is None:  # first use: start past every number already there
            row = conn.execute("SELECT MIN(number), MAX(number) FROM jobs").fetchone()
            last = min(math.floor(row[0] or 0), 0) if front else max(math.ceil(row[1] or 0), 0)
        else:
            last = row[0]
        number = last + step
        conn.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, number))
        return number

    def claim_next(self) -> Job | None:
        """Mark the lowest-numbered pending job running and return it."""
        with self._transaction() as conn:
            # equal numbers (a client may choose one already taken) run in the order they came
            row = conn.execute("SELECT * FROM jobs WHERE status = ? ORDER BY number, rowid LIMIT 1",
                               (PENDING,)).fetchone()
            if row is None:
                return None
            started = time.time()
            conn.execute("UPDATE jobs SET status = ?, started = ?, attempts = attempts + 1 WHERE id = ?",
                         (RUNNING, started, row["id"]))
        job = _job_from_row(row)
        job.status, job.started = RUNNING, started
        return job

    def finish(self, job_id: str, status: str, outputs: dict, error: dict | None, messages: list) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE jobs SET status = ?, finished = ?, outputs = ?, error = ?, messages = ? WHERE id = ?",
                         (status, time.time(), _dumps(outputs), _dumps(error) if error else None,
                          _dumps(messages), job_id))

    def requeue(self, job_id: str) -> None:
        """Put a job stopped by shutdown (not by the user) back in the queue; it did not fail."""
        with self._transaction() as conn:
            conn.execute("UPDATE jobs SET status = ?, started = NULL, attempts = MAX(attempts - 1, 0)"
                         " WHERE id = ?", (PENDING, job_id))

    def recover(self, max_attempts: int = MAX_ATTEMPTS) -> tuple[int, int]:
        """Jobs left running by a process that died: back to pending, or failed once they have been
        started `max_attempts` times. Returns (requeued, failed)."""
        with self._transaction() as conn:
            stuck = conn.execute("SELECT id, attempts FROM jobs WHERE status = ?", (RUNNING,)).fetchall()
            failed = [row["id"] for row in stuck if row["attempts"] >= max_attempts]
            for job_id in failed:
                error = {"prompt_id": job_id, "node_id": None, "node_type": None, "executed": [],
                         "exception_type": "ServerStopped", "traceback": [], "current_inputs": {},
                         "current_outputs": {}, "timestamp": int(time.time() * 1000),
                         "exception_message": f"the server stopped during this job {max_attempts} times"}
                conn.execute("UPDATE jobs SET status = ?, finished = ?, error = ?, messages = ? WHERE id = ?",
                             (ERROR, time.time(), _dumps(error), _dumps([["execution_error", error]]), job_id))
            conn.execute("UPDATE jobs SET status = ?, started = NULL WHERE status = ?", (PENDING, RUNNING))
        return len(stuck) - len(failed), len(failed)

    def cancel_pending(self, job_ids: list[str] | None = None) -> int:
        """Cancel these pending jobs (None: all of them); returns how many were pending."""
        with self._transaction() as conn:
            if job_ids is None:
                cursor = conn.execute("UPDATE jobs SET status = ?, finished = ? WHERE status = ?",
                                      (CANCELLED, time.time(), PENDING))
                return cursor.rowcount
            count = 0
            for job_id in job_ids:
                count += conn.execute("UPDATE jobs SET status = ?, finished = ? WHERE id = ? AND status = ?",
                                      (CANCELLED, time.time(), job_id, PENDING)).rowcount
            return count

    def delete_done(self, job_ids: list[str] | None = None) -> int:
        """Delete finished and cancelled jobs (None: all of them); active jobs are never deleted."""
        marks = ",".join("?" * len(DONE))
        with self._transaction() as conn:
            if job_ids is None:
                return conn.execute(f"DELETE FROM jobs WHERE status IN ({marks})", DONE).rowcount
            return sum(conn.execute(f"DELETE FROM jobs WHERE id = ? AND status IN ({marks})",
                                    (job_id, *DONE)).rowcount for job_id in job_ids)

    # -- reading -------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job_from_row(rows[0]) if rows else None

    def with_status(self, *statuses: str) -> list[Job]:
        marks = ",".join("?" * len(statuses))
        return [_job_from_row(r) for r in
                self._query(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY number, rowid", statuses)]

    def finished(self, max_items: int | None = None) -> list[Job]:
        """Finished jobs, oldest first; with max_items, the most recent ones."""
        marks = ",".join("?" * len(FINISHED))
        limit = -1 if max_items is None else max(int(max_items), 0)
        rows = self._query(f"SELECT * FROM (SELECT * FROM jobs WHERE status IN ({marks})"
                           f" ORDER BY finished DESC, number DESC LIMIT ?) ORDER BY finished, number",
                           (*FINISHED, limit))
        return [_job_from_row(r) for r in rows]

    def count(self, *statuses: str) -> int:
        marks = ",".join("?" * len(statuses))
        return self._query(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", statuses)[0][0]


def _as_json_object(workflow: Any) -> Any:
    """The workflow as it will be stored and run after a restart: decoded JSON, with tuples as lists."""
    try:
        if isinstance(workflow, (str, bytes)):
            return json.loads(workflow, parse_constant=_not_a_number)
        return json.loads(json.dumps(workflow, allow_nan=False))
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        error = {"type": "invalid_prompt", "message": "Workflow is not valid JSON", "details": str(exc),
                 "extra_info": {}}
        raise InvalidWorkflow(graph.Validation(None, error=error)) from None


def _not_a_number(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _without_preview(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "preview"}


class JobQueue:
    """Runs submitted workflows one at a time, in queue-number order, on a worker thread.

    One JobQueue per database file: start() treats every job marked running as abandoned."""

    def __init__(self, db_path: Path | str, registry: Mapping, hub: EventHub, executor: Executor | None = None):
        self.store = JobStore(db_path)
        self.registry = registry
        self.hub = hub
        self.executor = executor if executor is not None else Executor(registry)
        memory_manager.shared().watch(self.executor)  # cached outputs leave the GPU when models need it
        self._changed = threading.Condition()  # any job changed state; guards the fields below
        self._current: Job | None = None
        self._interrupt_current = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._progress = Progress()
        self._progress_lock = threading.Lock()
        self._last_remaining: int | None = None
        self._free_requested = False

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs a dead process left running, then start the worker."""
        with self._changed:
            if self._thread is not None and self._thread.is_alive():
                self._stopping = False  # a stop that timed out: that worker carries on
                return
            self._stopping = False
            requeued, failed = self.store.recover()
            if requeued or failed:
                log.info("recovered %d interrupted job(s); %d failed too often", requeued, failed)
            self._thread = threading.Thread(target=self._work, name="inkwash-jobs", daemon=True)
            self._thread.start()
            self._broadcast_status(force=True)

    def stop(self, timeout: float = 10) -> None:
        """Stop the worker; a job it was running goes back to pending and runs on the next start."""
        with self._changed:
            self._stopping = True
            if self._current is not None:
                self._interrupt_locked()
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    # -- submitting and controlling ------------------------------------------------------------------
    def submit(self, workflow: dict, client_id: str | None = None, extra: dict | None = None,
               front: bool = False, job_id: str | None = None, number: int | float | None = None) -> Job:
        """Validate and queue a workflow; raises InvalidWorkflow with ComfyUI's node_errors, and
        DuplicateJobId when `job_id` is taken. `number` None: at the back (at the front with `front`)."""
        workflow = _as_json_object(workflow)
        validation = graph.validate(workflow, self.registry)
        if not validation.ok:
            raise InvalidWorkflow(validation)
        extra = json.loads(json.dumps(extra or {}))
        with self._changed:
            job = self.store.insert(workflow, client_id, extra, validation.outputs, front=front, job_id=job_id,
                                    number=number)
            self._changed.notify_all()
            self._broadcast_status()
        return job

    def cancel(self, job_id: str) -> bool:
        """A pending job is cancelled (never runs); the running one is interrupted."""
        with self._changed:
            if self._current is not None and self._current.id == job_id:
                self._interrupt_locked()
                return True
            cancelled = self.store.cancel_pending([job_id])
            self._changed.notify_all()
            self._broadcast_status()
        return bool(cancelled)

    def clear_pending(self) -> int:
        with self._changed:
            cancelled = self.store.cancel_pending()
            self._changed.notify_all()
            self._broadcast_status()
        return cancelled

    def interrupt(self, job_id: str | None = None) -> bool:
        """Interrupt the running job (only if it is `job_id`, when given)."""
        with self._changed:
            if self._current is None or (job_id is not None and self._current.id != job_id):
                return False
            self._interrupt_locked()
            return True

    def _interrupt_locked(self) -> None:
        # Remembered as well: the executor clears its flag when a run starts, so an interrupt that
        # lands between claiming a job and starting it is passed on again at execution_start.
        self._interrupt_current = True
        self.executor.interrupt()

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is done; TimeoutError after `timeout` s, KeyError for an unknown id."""
        seen: list[Job | None] = [None]

        def finished() -> bool:
            seen[0] = self.store.get(job_id)
            return seen[0] is None or seen[0].done

        with self._changed:
            if not self._changed.wait_for(finished, timeout):
                raise TimeoutError(f"job {job_id} not done after {timeout} s")
        if seen[0] is None:
            raise KeyError(job_id)
        return seen[0]

    # -- reading -------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def pending(self) -> list[Job]:
        return self.store.with_status(PENDING)

    def running(self) -> Job | None:
        running = self.store.with_status(RUNNING)
        return running[0] if running else None

    def history(self, max_items: int | None = None) -> list[Job]:
        """Finished jobs (success, error, interrupted), oldest first; cancelled ones are not history."""
        return self.store.finished(max_items)

    def delete_history(self, ids: list[str] | None = None) -> None:
        self.store.delete_done(ids)

    def remaining(self) -> int:
        return self.store.count(*ACTIVE)

    @property
    def progress(self) -> Progress:
        """A snapshot of the running job's progress (job_id None when idle)."""
        with self._progress_lock:
            return copy.copy(self._progress)

    def free_memory(self) -> None:
        """Drop cached node outputs and loaded models (ComfyUI's /free): now when idle, else between
        jobs, so that a running job never loses a value it is about to read."""
        with self._changed:
            if self._current is None:
                self._free_now()
            else:
                self._free_requested = True

    def _free_now(self) -> None:
        self._free_requested = False
        self.executor.clear_cache()
        if "torch" in sys.modules:  # no model can be loaded if torch never was
            from ..nodes.runtime import model_cache

            model_cache.shared().clear()

    # -- the worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._changed:
                job = None
                while not self._stopping and (job := self.store.claim_next()) is None:
                    self._changed.wait()
                if job is None:
                    return
                if self._free_requested:
                    self._free_now()
                self._current, self._interrupt_current = job, False
                self._changed.notify_all()
            with self._progress_lock:
                self._progress = Progress(job_id=job.id, started=job.started)
            try:
                self._run(job)
            except Exception:  # the store itself failed; keep serving the next job
                log.exception("job %s could not be recorded", job.id)
                with self._changed:
                    self._current = None
                    self._changed.notify_all()

    def _run(self, job: Job) -> None:
        messages: list = []
        method = preview_method.resolve(job.extra.get(PREVIEW_METHOD_KEY), preview_method.FOR_OTHER_DOORS)
        previews = method != NO_PREVIEWS

        def on_event(name: str, data: dict) -> None:
            if name == "execution_start" and self._interrupt_current:
                self.executor.interrupt()
            if name == "executing" and data.get("node") is None:
                return  # ComfyUI's "this prompt is over": sent below, once the history is written
            self._track_progress(name, data)
            if name.startswith("execution_"):  # what ComfyUI keeps in history status.messages
                messages.append([name, _without_preview(data)])
            if name == "progress" and not previews and not isinstance(data.get("preview"), ImageFrame):
                data = _without_preview(data)  # sampler previews are off; an output node's frames are not
            self.hub.publish(name, data, job.client_id)

        warned: set[tuple] = set()

        def on_warning(message: str) -> None:
            node_id = self.progress.node
            if (node_id, message) in warned:  # once per node (SDXL's two text encoders read one prompt)
                return
            warned.add((node_id, message))
            warning = {"prompt_id": job.id, "node_id": node_id, "message": message,
                       "timestamp": int(time.time() * 1000)}
            messages.append(["execution_warning", warning])
            self.hub.publish("execution_warning", warning, job.client_id)

        try:
            with node_warnings(on_warning), previewing(method):
                result = self.executor.execute(job.workflow, prompt_id=job.id, on_event=on_event,
                                               extra_pnginfo=job.extra.get("extra_pnginfo"))
            status, outputs, error = result.status, result.outputs, result.error
            if status == "invalid":  # valid when queued, not now (a model file removed meanwhile)
                status, error = ERROR, self._failure(job, "InvalidWorkflow", result.validation.response())
                on_event("execution_error", error)
        except Exception as exc:  # a fault outside any node must not take the worker down
            log.exception("job %s failed outside its nodes", job.id)
            status, outputs = ERROR, {}
            error = self._failure(job, type(exc).__name__, {"exception_message": str(exc) or type(exc).__name__,
                                                            "traceback": traceback.format_exception(exc)})
            on_event("execution_error", error)

        with self._changed:
            requeued = status == INTERRUPTED and self._stopping
            if requeued:
                self.store.requeue(job.id)
            else:
                self.store.finish(job.id, status, outputs, error, messages)
            with self._progress_lock:
                self._progress = Progress()
            self._current = None
            self._broadcast_status()
            if not requeued:
                # As ComfyUI: after success, error or interrupt alike, and only once /history has the
                # job, so a client that stops reading here and asks /history/{id} always finds it.
                self.hub.publish("executing", {"node": None, "display_node": None, "prompt_id": job.id},
                                 job.client_id)
            self._changed.notify_all()

    @staticmethod
    def _failure(job: Job, kind: str, details: dict) -> dict:
        error = {"prompt_id": job.id, "node_id": None, "node_type": None, "executed": [],
                 "exception_type": kind, "traceback": [], "current_inputs": {}, "current_outputs": {},
                 "timestamp": int(time.time() * 1000)}
        if "error" in details:  # a validation response: say what failed, keep the node errors
            message = details["error"] or {}
            error["exception_message"] = f"{message.get('message', 'invalid workflow')}: {message.get('details', '')}"
            error["node_errors"] = details.get("node_errors", {})
        else:
            error.update(details)
        return error

    def _track_progress(self, name: str, data: dict) -> None:
        if name not in ("progress", "executing") or data.get("node") is None:
            return
        with self._progress_lock:
            self._progress.node = data["node"]
            if name == "progress":
                self._progress.value, self._progress.max = data.get("value", 0), data.get("max", 0)
                preview = data.get("preview")
                if preview is not None:  # keep the last preview between steps that send none
                    self._progress.preview = preview.image if isinstance(preview, ImageFrame) else preview

    def _broadcast_status(self, force: bool = False) -> None:
        """ComfyUI's "status" event to everyone, when the number of queued jobs changed. Called with
        `_changed` held, right after the change, so counts go out in the order they happened."""
        remaining = self.remaining()
        if force or remaining != self._last_remaining:
            self._last_remaining = remaining
            self.hub.publish("status", {"status": {"exec_info": {"queue_remaining": remaining}}}, None)
