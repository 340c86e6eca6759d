"""The job queue every door shares: workflows wait in SQLite and workers run them in order.

JobStore keeps each job (workflow, status, outputs, error, messages, the worker that ran it) in one
SQLite file, so the queue and the history survive a restart; a job the process died in is run again on
the next start (up to MAX_ATTEMPTS times, so a job that kills the process cannot crash-loop the
server), and so is a job whose worker died under it. JobQueue validates on submit and gives each job to
an idle worker (webui/workers/: by default one, the in-process worker with its single reused Executor,
whose cache makes seed-only re-runs fast; Ray actors run several jobs at once). It publishes every event
to the EventHub for the job's client, and tracks live progress for A1111's /progress.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import sqlite3
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
from . import preview_method
from .events import EventHub
from .workers import dispatch
from .workers.base import Worker, WorkerLost, WorkRequest, job_checkpoints
from .workers.in_process import InProcessWorker

log = logging.getLogger(__name__)

PENDING, RUNNING = "pending", "running"
SUCCESS, ERROR, INTERRUPTED, CANCELLED = "success", "error", "interrupted", "cancelled"
ACTIVE = (PENDING, RUNNING)
FINISHED = (SUCCESS, ERROR, INTERRUPTED)  # what ComfyUI's /history lists
DONE = FINISHED + (CANCELLED,)
MAX_ATTEMPTS = 3  # starts of one job the process (or its worker) may die in before it is marked failed
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
    worker: str | None = None  # the worker that ran it (the last one, when a worker died under it)

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
    messages     TEXT NOT NULL DEFAULT '[]',
    worker       TEXT
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
              output_nodes=stored("output_nodes", []), worker=row["worker"])
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
        if row is not None and "worker" not in row[0]:  # from before several workers
            self._conn.execute("ALTER TABLE jobs ADD COLUMN worker TEXT")
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

    def claim_next(self, worker: str | None = None) -> Job | None:
        """Mark the lowest-numbered pending job running (on `worker`) and return it."""
        with self._transaction() as conn:
            # equal numbers (a client may choose one already taken) run in the order they came
            row = conn.execute("SELECT * FROM jobs WHERE status = ? ORDER BY number, rowid LIMIT 1",
                               (PENDING,)).fetchone()
            return None if row is None else self._start(conn, row, worker)

    def claim(self, job_id: str, worker: str | None = None) -> Job | None:
        """Mark this job running on `worker`, if it is still pending."""
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ? AND status = ?", (job_id, PENDING)).fetchone()
            return None if row is None else self._start(conn, row, worker)

    @staticmethod
    def _start(conn: sqlite3.Connection, row: sqlite3.Row, worker: str | None) -> Job:
        started = time.time()
        conn.execute("UPDATE jobs SET status = ?, started = ?, attempts = attempts + 1, worker = ? WHERE id = ?",
                     (RUNNING, started, worker, row["id"]))
        job = _job_from_row(row)
        job.status, job.started, job.worker = RUNNING, started, worker
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
                self._fail_stopped(conn, job_id, "ServerStopped",
                                   f"the server stopped during this job {max_attempts} times")
            conn.execute("UPDATE jobs SET status = ?, started = NULL WHERE status = ?", (PENDING, RUNNING))
        return len(stuck) - len(failed), len(failed)

    def worker_lost(self, job_id: str, reason: str, max_attempts: int = MAX_ATTEMPTS) -> dict | None:
        """A running job whose worker died: back to pending (the attempt counts), or failed once it has
        been started `max_attempts` times. Returns the failed job's error, None when it was requeued."""
        with self._transaction() as conn:
            row = conn.execute("SELECT attempts FROM jobs WHERE id = ? AND status = ?", (job_id, RUNNING)).fetchone()
            if row is None:
                return None
            if row["attempts"] >= max_attempts:
                return self._fail_stopped(conn, job_id, "WorkerLost",
                                          f"a worker died during this job {max_attempts} times (last: {reason})")
            conn.execute("UPDATE jobs SET status = ?, started = NULL WHERE id = ?", (PENDING, job_id))
        return None

    @staticmethod
    def _fail_stopped(conn: sqlite3.Connection, job_id: str, kind: str, message: str) -> dict:
        error = {"prompt_id": job_id, "node_id": None, "node_type": None, "executed": [],
                 "exception_type": kind, "traceback": [], "current_inputs": {},
                 "current_outputs": {}, "timestamp": int(time.time() * 1000), "exception_message": message}
        conn.execute("UPDATE jobs SET status = ?, finished = ?, error = ?, messages = ? WHERE id = ?",
                     (ERROR, time.time(), _dumps(error), _dumps([["execution_error", error]]), job_id))
        return error

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


@dataclass
class _Slot:
    """One worker and the job it runs, guarded by the queue's `_changed` lock."""

    worker: Worker
    thread: threading.Thread | None = None
    job: Job | None = None
    interrupt: bool = False  # an interrupt asked for this job: passed on again at execution_start
    free_requested: bool = False
    removed: bool = False
    progress: Progress = field(default_factory=Progress)


class JobQueue:
    """Runs submitted workflows in queue-number order, each on an idle worker (one thread per worker).

    With no `workers`, one in-process worker runs `executor`: one job at a time, as ComfyUI.
    One JobQueue per database file: start() treats every job marked running as abandoned."""

    def __init__(self, db_path: Path | str, registry: Mapping, hub: EventHub, executor: Executor | None = None,
                 workers: list[Worker] | None = None):
        self.store = JobStore(db_path)
        self.registry = registry
        self.hub = hub
        self.executor = executor if executor is not None else Executor(registry)
        memory_manager.shared().watch(self.executor)  # cached outputs leave the GPU when models need it
        self._changed = threading.Condition()  # any job changed state; guards the fields below
        self._slots = [_Slot(worker) for worker in (workers or [InProcessWorker(self.executor)])]
        self._started = False
        self._stopping = False
        self._progress_lock = threading.Lock()
        self._last_remaining: int | None = None
        self._refused: dict[str, set[str]] = {}  # job id -> workers that found it invalid (a model they lack)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs a dead process left running, then start the workers."""
        with self._changed:
            carrying_on = any(self._thread_alive(slot) for slot in self._slots)  # a stop that timed out
            self._stopping, self._started = False, True
            if not carrying_on:
                requeued, failed = self.store.recover()
                if requeued or failed:
                    log.info("recovered %d interrupted job(s); %d failed too often", requeued, failed)
            for slot in self._slots:
                self._start_thread(slot)
            if not carrying_on:
                self._broadcast_status(force=True)

    @staticmethod
    def _thread_alive(slot: _Slot) -> bool:
        return slot.thread is not None and slot.thread.is_alive()

    def _start_thread(self, slot: _Slot) -> None:
        if not self._thread_alive(slot):
            slot.thread = threading.Thread(target=self._work, args=(slot,), daemon=True,
                                           name=f"inkwash-jobs-{slot.worker.name}")
            slot.thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Stop the workers; jobs they were running go back to pending and run on the next start."""
        with self._changed:
            self._stopping = True
            for slot in self._slots:
                if slot.job is not None:
                    self._interrupt_locked(slot)
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        for slot in list(self._slots):
            if slot.thread is not None:
                slot.thread.join(max(deadline - time.monotonic(), 0))
                if not slot.thread.is_alive():
                    slot.thread = None

    def close(self) -> None:
        """Stop the workers' threads and close the store (the workers belong to whoever made them)."""
        self.stop()
        self.store.close()

    # -- workers -------------------------------------------------------------------------------------
    @property
    def workers(self) -> list[Worker]:
        with self._changed:
            return [slot.worker for slot in self._slots if not slot.removed]

    def add_worker(self, worker: Worker) -> None:
        """A worker that came up (a node joined the cluster): it takes jobs from now on."""
        with self._changed:
            slot = _Slot(worker)
            self._slots.append(slot)
            if self._started and not self._stopping:
                self._start_thread(slot)
            self._changed.notify_all()

    def remove_worker(self, worker: Worker) -> None:
        """A worker that is gone: it takes no more jobs (one it runs ends as its worker is lost)."""
        with self._changed:
            for slot in self._slots:
                if slot.worker is worker:
                    slot.removed = True
            self._slots = [s for s in self._slots if not (s.removed and s.job is None)]
            self._changed.notify_all()

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

    def _slot_running(self, job_id: str) -> _Slot | None:
        return next((slot for slot in self._slots if slot.job is not None and slot.job.id == job_id), None)

    def cancel(self, job_id: str) -> bool:
        """A pending job is cancelled (never runs); a running one is interrupted."""
        with self._changed:
            slot = self._slot_running(job_id)
            if slot is not None:
                self._interrupt_locked(slot)
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
        """Interrupt the running job `job_id`; None: every running job."""
        with self._changed:
            slots = [slot for slot in self._slots if slot.job is not None and job_id in (None, slot.job.id)]
            for slot in slots:
                self._interrupt_locked(slot)
            return bool(slots)

    def _interrupt_locked(self, slot: _Slot) -> None:
        # Remembered as well: the executor clears its flag when a run starts, so an interrupt that
        # lands between claiming a job and starting it is passed on again at execution_start.
        slot.interrupt = True
        try:
            slot.worker.interrupt()
        except Exception:  # a worker that is gone has nothing left to interrupt
            log.warning("could not interrupt worker %s", slot.worker.name, exc_info=True)

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
        """The first running job (the one a single-worker client shows)."""
        running = self.running_jobs()
        return running[0] if running else None

    def running_jobs(self) -> list[Job]:
        """Every running job, in queue order."""
        return self.store.with_status(RUNNING)

    def history(self, max_items: int | None = None) -> list[Job]:
        """Finished jobs (success, error, interrupted), oldest first; cancelled ones are not history."""
        return self.store.finished(max_items)

    def delete_history(self, ids: list[str] | None = None) -> None:
        self.store.delete_done(ids)

    def remaining(self) -> int:
        return self.store.count(*ACTIVE)

    @property
    def progress(self) -> Progress:
        """A snapshot of the longest-running job's progress (job_id None when idle)."""
        with self._progress_lock:
            running = [slot.progress for slot in self._slots if slot.progress.job_id is not None]
            return copy.copy(min(running, key=lambda p: p.started or 0)) if running else Progress()

    def progress_of(self, job_id: str) -> Progress:
        """A snapshot of this running job's progress (job_id None when it is not running)."""
        with self._progress_lock:
            found = next((slot.progress for slot in self._slots if slot.progress.job_id == job_id), None)
            return copy.copy(found) if found is not None else Progress()

    def free_memory(self) -> None:
        """Drop cached node outputs and loaded models (ComfyUI's /free): now on idle workers, else
        between jobs, so that a running job never loses a value it is about to read."""
        with self._changed:
            for slot in self._slots:
                if slot.job is None:
                    self._free_now(slot)
                else:
                    slot.free_requested = True

    @staticmethod
    def _free_now(slot: _Slot) -> None:
        slot.free_requested = False
        slot.worker.warm = set()
        try:
            slot.worker.free_memory()
        except Exception:
            log.warning("worker %s could not free its memory", slot.worker.name, exc_info=True)

    # -- the workers' threads ------------------------------------------------------------------------
    def _claim(self, slot: _Slot) -> Job | None:
        """The job this slot's worker should run next, marked running on it (lock held)."""
        idle = [s.worker for s in self._slots if s.job is None and not s.removed]
        while True:
            pending = [job for job in self.store.with_status(PENDING)
                       if slot.worker.name not in self._refused.get(job.id, ())]
            job = dispatch.choose(pending, slot.worker, idle)
            if job is None:
                return None
            claimed = self.store.claim(job.id, slot.worker.name)
            if claimed is not None:
                return claimed

    def _work(self, slot: _Slot) -> None:
        while True:
            with self._changed:
                job = None
                while not (self._stopping or slot.removed) and (job := self._claim(slot)) is None:
                    self._changed.wait()
                if job is None:
                    if slot.removed:
                        self._slots = [s for s in self._slots if s is not slot]
                    return
                if slot.free_requested:
                    self._free_now(slot)
                slot.job, slot.interrupt = job, False
                self._changed.notify_all()
            with self._progress_lock:
                slot.progress = Progress(job_id=job.id, started=job.started)
            try:
                lost = self._run(slot, job)
            except Exception:  # the store itself failed; keep serving the next job
                log.exception("job %s could not be recorded", job.id)
                with self._changed:
                    slot.job = None
                    self._changed.notify_all()
                continue
            if lost:  # take no job before the worker is back: the others take the requeued one
                slot.worker.wait_until_back()
                if not slot.worker.alive:  # gone for good: its slot goes too
                    self.remove_worker(slot.worker)
                    return

    def _run(self, slot: _Slot, job: Job) -> bool:
        """Run one job on the slot's worker and record how it ended; True when the worker was lost."""
        messages: list = []
        method = preview_method.resolve(job.extra.get(PREVIEW_METHOD_KEY), preview_method.FOR_OTHER_DOORS)
        previews = method != NO_PREVIEWS
        worker = slot.worker

        def on_event(name: str, data: dict) -> None:
            if name == "execution_start" and slot.interrupt:
                worker.interrupt()
            if name == "executing" and data.get("node") is None:
                return  # ComfyUI's "this prompt is over": sent below, once the history is written
            self._track_progress(slot, name, data)
            if name.startswith("execution_"):  # what ComfyUI keeps in history status.messages
                messages.append([name, _without_preview(data)])
            if name == "progress" and not previews and not isinstance(data.get("preview"), ImageFrame):
                data = _without_preview(data)  # sampler previews are off; an output node's frames are not
            self.hub.publish(name, data, job.client_id)

        warned: set[tuple] = set()

        def on_warning(message: str) -> None:
            node_id = slot.progress.node
            if (node_id, message) in warned:  # once per node (SDXL's two text encoders read one prompt)
                return
            warned.add((node_id, message))
            warning = {"prompt_id": job.id, "node_id": node_id, "message": message,
                       "timestamp": int(time.time() * 1000)}
            messages.append(["execution_warning", warning])
            self.hub.publish("execution_warning", warning, job.client_id)

        lost: WorkerLost | None = None
        refused = False  # a worker found it invalid (it lacks a model), another may not
        request = WorkRequest(job.id, job.workflow, job.extra.get("extra_pnginfo"), method)
        try:
            result = worker.run(request, on_event, on_warning)
            status, outputs, error = result.status, result.outputs, result.error
            if status == "invalid":  # valid when queued, not there (a model that worker lacks) or not now
                with self._changed:
                    tried = self._refused.setdefault(job.id, set())
                    tried.add(worker.name)
                    refused = any(s.worker.name not in tried for s in self._slots if not s.removed)
                if not refused:
                    status, error = ERROR, self._failure(job, "InvalidWorkflow", result.invalid or {})
                    if len(tried) > 1:
                        error["exception_message"] += f" (every worker refused it: {', '.join(sorted(tried))})"
                    on_event("execution_error", error)
            else:
                worker.warm = job_checkpoints(job.workflow)
        except WorkerLost as exc:
            log.warning("worker %s was lost during job %s: %s", worker.name, job.id, exc)
            lost, status, outputs, error = exc, ERROR, {}, None
        except Exception as exc:  # a fault outside any node must not take the worker down
            log.exception("job %s failed outside its nodes", job.id)
            status, outputs = ERROR, {}
            error = self._failure(job, type(exc).__name__, {"exception_message": str(exc) or type(exc).__name__,
                                                            "traceback": traceback.format_exception(exc)})
            on_event("execution_error", error)

        with self._changed:
            requeued = (status == INTERRUPTED and self._stopping) or refused
            if lost is None and not requeued:
                self._refused.pop(job.id, None)
            if lost is not None:
                worker.warm = set()
                error = self.store.worker_lost(job.id, f"{worker.name}: {lost}")
                requeued = error is None
                if error is not None:
                    self.hub.publish("execution_error", error, job.client_id)
            elif requeued:
                self.store.requeue(job.id)
            else:
                self.store.finish(job.id, status, outputs, error, messages)
            with self._progress_lock:
                slot.progress = Progress()
            slot.job = None
            if slot.removed:
                self._slots = [s for s in self._slots if s is not slot]
            self._broadcast_status()
            if not requeued:
                # As ComfyUI: after success, error or interrupt alike, and only once /history has the
                # job, so a client that stops reading here and asks /history/{id} always finds it.
                self.hub.publish("executing", {"node": None, "display_node": None, "prompt_id": job.id},
                                 job.client_id)
            self._changed.notify_all()
        return lost is not None

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

    def _track_progress(self, slot: _Slot, name: str, data: dict) -> None:
        if name not in ("progress", "executing") or data.get("node") is None:
            return
        with self._progress_lock:
            progress = slot.progress
            progress.node = data["node"]
            if name == "progress":
                progress.value, progress.max = data.get("value", 0), data.get("max", 0)
                preview = data.get("preview")
                if preview is not None:  # keep the last preview between steps that send none
                    progress.preview = preview.image if isinstance(preview, ImageFrame) else preview

    def _broadcast_status(self, force: bool = False) -> None:
        """ComfyUI's "status" event to everyone, when the number of queued jobs changed. Called with
        `_changed` held, right after the change, so counts go out in the order they happened."""
        remaining = self.remaining()
        if force or remaining != self._last_remaining:
            self._last_remaining = remaining
            self.hub.publish("status", {"status": {"exec_info": {"queue_remaining": remaining}}}, None)
