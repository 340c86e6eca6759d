"""Queue & history: the pending, running, finished and cancelled jobs of every door (tabs, ComfyUI and
A1111 clients) with their prompts, and a thumbnail of each job's first image, refreshed by a timer; pick
a job to see its images, cancel it, or reopen its workflow (with its images) in the Workflows tab."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..context import ServerContext
from ..jobs import CANCELLED, Job
from .running import error_message, output_files, refused

COLUMNS = ["id", "#", "status", "from", "prompt", "queued", "seconds", "images", "worker", "error"]
HISTORY_ROWS = 50
REFRESH_SECONDS = 2.0
PROMPT_CHARS = 80
SAMPLERS = ("KSampler", "KSamplerAdvanced")


def job_prompt(workflow: dict) -> str:
    """The positive prompt of a workflow: the text of what feeds its first sampler's `positive` (ComfyUI
    API format), else of its first text-encode node; "" when it has none."""
    nodes = workflow if isinstance(workflow, dict) else {}
    encoders = [node for node in nodes.values() if isinstance(node, dict)
                and isinstance((node.get("inputs") or {}).get("text", (node.get("inputs") or {}).get("text_g")), str)]
    for node in nodes.values():
        if isinstance(node, dict) and node.get("class_type") in SAMPLERS:
            link = (node.get("inputs") or {}).get("positive")
            source = nodes.get(str(link[0])) if isinstance(link, list) and link else None
            if source in encoders:
                encoders = [source]
            break
    if not encoders:
        return ""
    inputs = encoders[0]["inputs"]
    return inputs.get("text") if isinstance(inputs.get("text"), str) else inputs.get("text_g", "")


def job_images(ctx: ServerContext, job: Job | None) -> list[str]:
    """The images a job's output nodes saved or previewed that are still on disk, in node order."""
    return [str(path) for path in output_files(ctx, job.outputs or {})] if job is not None else []


def _row(job: Job) -> list:
    seconds = round(job.finished - job.started, 1) if job.finished and job.started else None
    images = sum(len((ui or {}).get("images", [])) for ui in (job.outputs or {}).values())
    prompt = job_prompt(job.workflow)
    return [job.id, job.number, job.status, (job.extra or {}).get("source", ""),
            prompt if len(prompt) <= PROMPT_CHARS else prompt[:PROMPT_CHARS - 3] + "...",
            time.strftime("%H:%M:%S", time.localtime(job.created)), seconds, images, job.worker or "",
            error_message(job) if job.status == "error" else ""]


def listed_jobs(ctx: ServerContext, max_history: int = HISTORY_ROWS) -> list[Job]:
    """Running first, then pending in queue order, then the most recent finished or cancelled jobs,
    newest first (a cancelled job stays listed as cancelled)."""
    done = [*ctx.queue.history(max_history), *ctx.queue.store.with_status(CANCELLED)]
    done.sort(key=lambda job: (job.finished or job.created, job.number), reverse=True)
    return [*ctx.queue.running_jobs(), *ctx.queue.pending(), *done[:max_history]]


def job_rows(ctx: ServerContext, max_history: int = HISTORY_ROWS) -> list[list]:
    return [_row(job) for job in listed_jobs(ctx, max_history)]


def thumbnails(ctx: ServerContext, jobs: list[Job]) -> list[tuple[str, str]]:
    """(first image, "#number prompt") of each listed job that has images."""
    items = []
    for job in jobs:
        images = job_images(ctx, job) if job.status == "success" else []
        if images:
            items.append((images[0], f"#{job.number} {job_prompt(job.workflow)[:PROMPT_CHARS]}".strip()))
    return items


def refresh(ctx: ServerContext, shown: list | None) -> tuple:
    """(table, thumbnails, each gr.skip() when unchanged; the rows now shown): a timer tick redraws only
    on change."""
    jobs = listed_jobs(ctx)
    rows = [_row(job) for job in jobs]
    if rows == shown:
        return gr.skip(), gr.skip(), rows
    return rows, thumbnails(ctx, jobs), rows


def cancel(ctx: ServerContext, job_id: str | None) -> str:
    job_id = (job_id or "").strip()
    job = ctx.queue.get(job_id) if job_id else None
    if job is None:
        raise refused(f"No job {job_id!r}")
    if job.done:
        return f"Job {job_id} already {job.status}"
    return f"Cancelled {job_id}" if ctx.queue.cancel(job_id) else f"Job {job_id} could not be cancelled"


def finished_workflow(ctx: ServerContext, job_id: str | None) -> dict:
    """The workflow a job ran, to reopen in the Workflows tab."""
    return picked_job(ctx, job_id).workflow


def picked_job(ctx: ServerContext, job_id: str | None) -> Job:
    job = ctx.queue.get((job_id or "").strip())
    if job is None:
        raise refused(f"No job {job_id!r}")
    return job


def show_job(ctx: ServerContext, job_id: str | None) -> tuple[list[tuple[str, str]], str]:
    """(the picked job's images, a line about it) when a job is picked."""
    job = ctx.queue.get((job_id or "").strip()) if job_id else None
    if job is None:
        return [], ""
    images = job_images(ctx, job)
    prompt = job_prompt(job.workflow)
    line = f"Job #{job.number}: {job.status}" + (f" - {prompt}" if prompt else "")
    return [(path, Path(path).name) for path in images], line


def pick_thumbnail(ctx: ServerContext, evt: gr.SelectData) -> str:
    """A click on a thumbnail: the job id it shows (its caption starts with #number)."""
    caption = str((evt.value or {}).get("caption") or "") if isinstance(evt.value, dict) else ""
    number = caption.split(" ", 1)[0].lstrip("#")
    job = next((job for job in listed_jobs(ctx) if str(job.number) == number), None)
    return job.id if job is not None else gr.skip()


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
    jobs = listed_jobs(ctx)
    rows = [_row(job) for job in jobs]
    with gr.Row():
        with gr.Column(scale=3):
            table = gr.Dataframe(rows, headers=COLUMNS, interactive=False, wrap=True,
                                 label="Jobs (click a row to pick it)")
        with gr.Column(scale=1, min_width=220):
            recent = gr.Gallery(thumbnails(ctx, jobs), label="Recent images (click one to pick its job)", columns=3,
                                height=360, object_fit="contain", allow_preview=False, interactive=False)
    shown = gr.State(rows)
    with gr.Row(equal_height=True):
        job_id = gr.Textbox(label="Job id", scale=4)
        cancel_button = gr.Button("Cancel job", variant="stop", scale=0, min_width=110)
        reopen = gr.Button("Open in Workflows", scale=0, min_width=150)
    status = gr.Markdown()
    picked = gr.Gallery(label="Images of the picked job", columns=6, height="auto", object_fit="contain", fit_columns=False,
                        interactive=False)
    timer = gr.Timer(REFRESH_SECONDS)
    timer.tick(lambda current: refresh(ctx, current), inputs=[shown], outputs=[table, recent, shown],
               show_progress="hidden")
    table.select(pick_job, inputs=[table], outputs=[job_id])
    def on_thumbnail(evt: gr.SelectData) -> str:
        return pick_thumbnail(ctx, evt)

    recent.select(on_thumbnail, inputs=None, outputs=[job_id])
    job_id.change(lambda value: show_job(ctx, value), inputs=[job_id], outputs=[picked, status])
    cancel_button.click(lambda value: cancel(ctx, value), inputs=[job_id], outputs=[status])
    return HistoryTab(table, job_id, reopen)
