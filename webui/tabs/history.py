"""Queue & history: the pending, running and finished jobs of every door (tabs, ComfyUI and A1111
clients), refreshed by a timer; cancel a job, or reopen a finished job's workflow."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..context import ServerContext
from ..jobs import Job
from .running import error_message

COLUMNS = ["id", "#", "status", "from", "queued", "seconds", "images", "error"]
HISTORY_ROWS = 50
REFRESH_SECONDS = 2.0


def _row(job: Job) -> list:
    seconds = round(job.finished - job.started, 1) if job.finished and job.started else None
    images = sum(len((ui or {}).get("images", [])) for ui in (job.outputs or {}).values())
    return [job.id, job.number, job.status, (job.extra or {}).get("source", ""),
            time.strftime("%H:%M:%S", time.localtime(job.created)), seconds, images,
            error_message(job) if job.status == "error" else ""]


def job_rows(ctx: ServerContext, max_history: int = HISTORY_ROWS) -> list[list]:
    """Running first, then pending in queue order, then the most recent finished jobs, newest first."""
    running = ctx.queue.running()
    jobs = [*([running] if running is not None else []), *ctx.queue.pending(),
            *reversed(ctx.queue.history(max_history))]
    return [_row(job) for job in jobs]


def refresh(ctx: ServerContext, shown: list | None) -> tuple:
    """(table or gr.skip() when unchanged, the rows now shown): a timer tick redraws only on change."""
    rows = job_rows(ctx)
    return (rows if rows != shown else gr.skip()), rows


def cancel(ctx: ServerContext, job_id: str | None) -> str:
    job_id = (job_id or "").strip()
    job = ctx.queue.get(job_id) if job_id else None
    if job is None:
        raise gr.Error(f"No job {job_id!r}")
    if job.done:
        return f"Job {job_id} already {job.status}"
    return f"Cancelled {job_id}" if ctx.queue.cancel(job_id) else f"Job {job_id} could not be cancelled"


def finished_workflow(ctx: ServerContext, job_id: str | None) -> dict:
    """The workflow a job ran, to reopen in the Workflows tab."""
    job = ctx.queue.get((job_id or "").strip())
    if job is None:
        raise gr.Error(f"No job {job_id!r}")
    return job.workflow


def pick_job(table: Any, evt: gr.SelectData) -> str:
    """A click on a table cell: the job id of its row."""
    if evt.row_value:
        return str(evt.row_value[0])
    index = evt.index if isinstance(evt.index, (list, tuple)) else [evt.index]
    rows = table.values.tolist() if hasattr(table, "values") else (table or [])
    row = index[0] if index and isinstance(index[0], int) else None
    return str(rows[row][0]) if row is not None and 0 <= row < len(rows) and rows[row] else gr.skip()


@dataclass
class HistoryTab:
    table: gr.Dataframe
    job_id: gr.Textbox
    reopen: gr.Button


def build(ctx: ServerContext) -> HistoryTab:
    rows = job_rows(ctx)
    table = gr.Dataframe(rows, headers=COLUMNS, interactive=False, wrap=True, label="Jobs (click a row to pick it)")
    shown = gr.State(rows)
    with gr.Row(equal_height=True):
        job_id = gr.Textbox(label="Job id", scale=4)
        cancel_button = gr.Button("Cancel job", variant="stop", scale=0, min_width=110)
        reopen = gr.Button("Open in Workflows", scale=0, min_width=150)
    status = gr.Markdown()
    timer = gr.Timer(REFRESH_SECONDS)
    timer.tick(lambda current: refresh(ctx, current), inputs=[shown], outputs=[table, shown], show_progress="hidden")
    table.select(pick_job, inputs=[table], outputs=[job_id])
    cancel_button.click(lambda value: cancel(ctx, value), inputs=[job_id], outputs=[status])
    return HistoryTab(table, job_id, reopen)
