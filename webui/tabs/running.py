"""Submitting a tab's workflows to the shared queue and watching them run, for the streaming handlers.

The tabs never run the executor: they submit to `ctx.queue` like every other door and follow the
jobs through the queue's live progress until they are done.
"""
from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ...nodes.folders import safe_path
from ..context import ServerContext
from ..jobs import InvalidWorkflow, Job, Progress

log = logging.getLogger(__name__)

POLL_SECONDS = 0.15  # between looks at the queue while a job runs
QUIET_SECONDS = 1.0  # the longest a watcher stays silent (queue position may have changed)
SOURCE = "tab"
STOPPED = ("interrupted", "cancelled")


def refused(message: str) -> gr.Error:
    """A user's mistake (bad input, nothing picked yet): shown in the page, and logged in one line
    without a traceback, which is for the server's own failures."""
    log.warning("refused: %s", message)
    return gr.Error(message, print_exception=False)


class SubmitError(Exception):
    """The queue refused a workflow; the message says which node and input."""


def editor_copy(ctx: ServerContext, workflow: dict) -> dict | None:
    """The graph editor's format of `workflow`, embedded in saved PNGs so the editor can open them."""
    from ..graph_editor import editor_workflow

    try:
        return editor_workflow(ctx, workflow)
    except Exception:  # a picture without the editor's copy is still a picture
        log.debug("no editor copy of the workflow", exc_info=True)
        return None


def describe_refusal(exc: InvalidWorkflow) -> str:
    response = exc.response()
    message = (response.get("error") or {}).get("message", "invalid workflow")
    details = []
    for node_id, node in (response.get("node_errors") or {}).items():
        for error in node.get("errors", []):
            details.append(f"node {node_id} ({node.get('class_type')}): {error.get('details') or error.get('message')}")
    return message + (": " + "; ".join(details) if details else "")


def submit_all(ctx: ServerContext, workflows: list[dict]) -> list[str]:
    """Queue every workflow (all or none) and return the job ids, in order."""
    ids: list[str] = []
    try:
        for workflow in workflows:
            extra: dict[str, Any] = {"source": SOURCE}
            ui_workflow = editor_copy(ctx, workflow)
            if ui_workflow is not None:
                extra["extra_pnginfo"] = {"workflow": ui_workflow}
            ids.append(ctx.queue.submit(workflow, extra=extra).id)
    except InvalidWorkflow as exc:
        for job_id in ids:
            ctx.queue.cancel(job_id)
        raise SubmitError(describe_refusal(exc)) from None
    return ids


def stop_jobs(ctx: ServerContext, job_ids: list[str]) -> int:
    """Cancel the pending jobs among `job_ids` and interrupt the running one; returns how many."""
    return sum(bool(ctx.queue.cancel(job_id)) for job_id in job_ids
               if (job := ctx.queue.get(job_id)) is not None and not job.done)


@dataclass
class Watch:
    """What a watcher saw: the jobs done so far (by id) and the running job's progress."""

    job_ids: list[str]
    done: dict[str, Job] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    ahead: int = 0  # jobs that run before the first of ours
    newly_done: list[str] = field(default_factory=list)
    steps: dict[str, float] = field(default_factory=dict)  # the share of its steps each job got through
    last_preview: Any = None  # the latest step's preview, kept once the job is done (the partial image)

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.job_ids)

    @property
    def stopped(self) -> bool:
        """Interrupted or cancelled (by Interrupt, or from the Queue tab) rather than finished."""
        return any(job.status in STOPPED for job in self.done.values())


def watch(ctx: ServerContext, job_ids: list[str], poll: float = POLL_SECONDS) -> Iterator[Watch]:
    """Yield whenever something visible changed (a step, a preview, a job finishing), until every job
    is done. Waits on the queue's condition between looks, so it never spins."""
    state = Watch(list(job_ids))
    last_seen: tuple | None = None
    quiet = 0.0
    while True:
        state.newly_done = []
        for job_id in job_ids:
            if job_id in state.done:
                continue
            job = ctx.queue.get(job_id)
            if job is None:  # deleted meanwhile: nothing more will come of it
                job = Job(job_id, 0, {}, None, {}, "cancelled", 0.0)
            if job.done:
                state.done[job_id] = job
                state.newly_done.append(job_id)
        state.progress = next((progress for job_id in job_ids
                               if (progress := ctx.queue.progress_of(job_id)).job_id is not None), Progress())
        if state.progress.job_id is not None:
            if state.progress.max:
                state.steps[state.progress.job_id] = state.progress.value / state.progress.max
            if state.progress.preview is not None:
                state.last_preview = state.progress.preview
        if state.progress.job_id is None and not state.finished:
            state.ahead = _jobs_ahead(ctx, [j for j in job_ids if j not in state.done])
        seen = (len(state.done), state.progress.job_id, state.progress.value, state.progress.max,
                id(state.progress.preview), state.ahead)
        if seen != last_seen or state.finished or quiet >= QUIET_SECONDS:
            last_seen, quiet = seen, 0.0
            yield state
        if state.finished:
            return
        waiting_on = next(j for j in job_ids if j not in state.done)
        try:
            ctx.queue.wait(waiting_on, timeout=poll)
        except (TimeoutError, KeyError):
            pass
        quiet += poll


def _jobs_ahead(ctx: ServerContext, ours: list[str]) -> int:
    pending = ctx.queue.pending()
    first = next((job.number for job in pending if job.id in ours), None)
    if first is None:
        return 0
    return sum(job.number < first for job in pending) + len(ctx.queue.running_jobs())


def progress_html(state: Watch, label: str = "Image", workflows: list[dict] | None = None) -> str:
    """A progress bar with the step count of the running job; `workflows` (in job order) name the
    node running between steps."""
    total = len(state.job_ids)
    done = len(state.done)
    progress = state.progress
    if state.finished:
        statuses = [job.status for job in state.done.values()]
        failed = [job for job in state.done.values() if job.status == "error"]
        if all(s == "success" for s in statuses):
            text, fraction = "Done", 1.0
        elif state.stopped and not failed:
            made = statuses.count("success")
            text = "Interrupted" + (f" after {made} of {total}" if total > 1 else "")
            # the bar stays where the work stopped
            fraction = sum(1.0 if job.status == "success" else state.steps.get(job_id, 0.0)
                           for job_id, job in state.done.items()) / total
        else:
            text = "Finished: " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
            fraction = 1.0
        if failed:
            text += " - " + error_message(failed[0])
    elif progress.job_id is not None:
        index = state.job_ids.index(progress.job_id) + 1
        step = f"step {progress.value}/{progress.max}" if progress.max else _running_node(
            progress.node, workflows[index - 1] if workflows and index <= len(workflows) else None)
        text = f"{label} {index}/{total}: {step}" if total > 1 else step.capitalize()
        fraction = (done + (progress.value / progress.max if progress.max else 0)) / total
    else:
        text = f"Waiting in the queue ({state.ahead} job(s) ahead)" if state.ahead else "Starting..."
        fraction = done / total if total else 0
    permille = int(round(max(0.0, min(1.0, fraction)) * 1000))
    return (f'<div class="inkwash-progress"><progress value="{permille}" max="1000" style="width:100%">'
            f'</progress><div>{html.escape(text)}</div></div>')


def _running_node(node_id: str | None, workflow: dict | None) -> str:
    node = (workflow or {}).get(node_id) or {}
    title = (node.get("_meta") or {}).get("title") or node.get("class_type")
    return f"running {title}" if title else f"running node {node_id or '...'}"


def idle_html(text: str = "") -> str:
    return f'<div class="inkwash-progress"><div>{html.escape(text)}</div></div>'


def error_message(job: Job) -> str:
    error = job.error or {}
    where = f"node {error['node_id']} ({error.get('node_type')}): " if error.get("node_id") else ""
    return where + str(error.get("exception_message") or job.status)


def output_files(ctx: ServerContext, outputs: dict, node_ids: list[str] | None = None,
                 key: str = "images") -> list[Path]:
    """Files a job's output nodes report (ComfyUI ui dicts), in node order, that exist on disk."""
    bases = {"output": ctx.folders.output_dir, "temp": ctx.folders.temp_dir, "input": ctx.folders.input_dir}
    paths = []
    for node_id in node_ids if node_ids is not None else sorted(outputs, key=_node_order):
        for entry in (outputs.get(node_id) or {}).get(key, []):
            if not isinstance(entry, dict) or "filename" not in entry:
                continue
            base = bases.get(entry.get("type") or "output", ctx.folders.output_dir)
            subfolder = entry.get("subfolder") or ""
            try:
                path = safe_path(base, f"{subfolder}/{entry['filename']}" if subfolder else entry["filename"])
            except ValueError:
                continue
            if path.is_file():
                paths.append(path)
    return paths


def _node_order(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
