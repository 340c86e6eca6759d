"""The Workflows tab: open any API-format workflow, edit its node inputs in a generated form, run it
with progress, see its outputs and save it under a name."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any, NamedTuple

import gradio as gr
from gradio.components import Component

from ...nodes.registry import object_info
from ..context import oversized_nodes
from ..context import ServerContext
from ..generation import store_input_image
from .generate import as_pil, enlarged
from .uploads import refuse_non_images
from .running import SubmitError, output_files, progress_html, refused, stop_jobs, submit_all, watch
from .workflow_files import (Field, WorkflowError, apply_values, form_fields, load_source, load_upload,
                             save_workflow, workflow_sources)

DEFAULT_SOURCE = "template:txt2img"


class Opened(NamedTuple):
    """What opening a workflow updates: the workflow, its form, the JSON view, a status line, the name."""

    workflow: dict | None
    fields: list[dict]
    json_text: str
    status: str
    name: str


class RunOutputs(NamedTuple):
    progress: str
    preview: Any
    gallery: Any
    outputs: Any  # {"status", "error", "outputs"} of the finished job
    results: dict
    workflow: dict
    json_text: str


def open_workflow(ctx: ServerContext, workflow: dict | None, name: str = "", status: str = "") -> Opened:
    if workflow is None:
        return Opened(None, [], "", status, name)
    fields = [f.as_dict() for f in form_fields(workflow, object_info(dict(ctx.registry)))]
    return Opened(workflow, fields, json.dumps(workflow, indent=2), status or f"Opened {name or 'workflow'}", name)


def open_source(ctx: ServerContext, source: str | None) -> Opened:
    if not source:
        return open_workflow(ctx, None)
    try:
        workflow, name = load_source(ctx, source)
    except (WorkflowError, OSError) as exc:
        raise refused(str(exc)) from None
    return open_workflow(ctx, workflow, name)


def open_upload(ctx: ServerContext, path: str | None) -> Opened:
    if not path:
        raise refused("Drop a workflow file or an image first")
    try:
        workflow = load_upload(ctx, path)
    except (WorkflowError, OSError) as exc:
        raise refused(str(exc)) from None
    return open_workflow(ctx, workflow, "uploaded")


def edited(workflow: dict | None, fields: list[dict], values: list) -> dict:
    if not workflow:
        raise refused("Open a workflow first")
    return apply_values(workflow, [Field(**f) for f in fields or []], list(values))


def save(ctx: ServerContext, name: str, workflow: dict) -> tuple[str, gr.Dropdown]:
    """Save under `name`; (status line, the source list with it selected)."""
    try:
        source = save_workflow(ctx, name, workflow)
    except WorkflowError as exc:
        raise refused(str(exc)) from None
    return f"Saved as {source.split(':', 1)[1]}", gr.Dropdown(choices=workflow_sources(ctx), value=source)


def run(ctx: ServerContext, workflow: dict) -> Iterator[RunOutputs]:
    """Queue the workflow and stream its progress, then its images and outputs."""
    too_big = oversized_nodes(workflow, ctx.max_pixels)
    if too_big:
        raise refused("; ".join(e["errors"][0]["message"] for e in too_big.values()))
    try:
        job_ids = submit_all(ctx, [workflow])
    except SubmitError as exc:
        raise refused(str(exc)) from None
    results = {"jobs": job_ids}
    json_text = json.dumps(workflow, indent=2)
    for state in watch(ctx, job_ids):
        if not state.finished:
            yield RunOutputs(progress_html(state, workflows=[workflow]), enlarged(state.progress.preview),
                             gr.skip(), gr.skip(), results, workflow, json_text)
            continue
        job = state.done[job_ids[0]]
        images = [(str(p), p.name) for p in output_files(ctx, job.outputs)]
        summary = {"status": job.status, "error": job.error, "outputs": job.outputs}
        yield RunOutputs(progress_html(state), None, images, summary, results, workflow, json_text)


def upload_input_image(ctx: ServerContext, image: Any, choices: list) -> gr.Dropdown:
    """Store an image in the input folder for a LoadImage-like field and select it."""
    if image is None:
        return gr.skip()
    name = store_input_image(ctx.folders, as_pil(image), "workflows/upload")
    return gr.Dropdown(choices=[*choices, name], value=name)


# -- layout --------------------------------------------------------------------------------------------

@dataclass
class WorkflowsTab:
    source: gr.Dropdown
    workflow: gr.State
    fields: gr.State
    json_view: gr.Code
    status: gr.Markdown
    name: gr.Textbox
    gallery: gr.Gallery  # the images of the last run (or of the reopened job)

    @property
    def opened_outputs(self) -> list[Component]:
        """Where an Opened goes, in its order."""
        return [self.workflow, self.fields, self.json_view, self.status, self.name]


def _widget(ctx: ServerContext, field: Field) -> Component:
    # Explicitly interactive: Gradio would render them read-only, as their events are wired inside
    # gr.render. info is never None: a re-render keeps the previous field's help text otherwise.
    common = {"label": field.name, "info": field.tooltip or "", "interactive": True}
    if field.kind in ("INT", "FLOAT"):
        return gr.Number(field.value, minimum=field.minimum, maximum=field.maximum,
                         step=field.step or (1 if field.kind == "INT" else 0.01),
                         precision=0 if field.kind == "INT" else None, **common)
    if field.kind == "BOOLEAN":
        return gr.Checkbox(bool(field.value), **common)
    if field.kind == "COMBO":
        choices = list(field.choices or [])
        if field.value not in choices:  # keep what the workflow says, even when missing here
            choices.append(field.value)
        dropdown = gr.Dropdown(choices, value=field.value, **common)
        if field.image_upload:
            upload = gr.Image(label=f"Upload for {field.name}", type="pil", height=140)
            refuse_non_images(upload)
            upload.upload(lambda image: upload_input_image(ctx, image, choices), inputs=[upload], outputs=[dropdown])
        return dropdown
    return gr.Textbox(str(field.value), lines=3 if field.multiline else 1, **common)


def build(ctx: ServerContext) -> WorkflowsTab:
    first = open_source(ctx, DEFAULT_SOURCE)
    with gr.Row():
        with gr.Row(equal_height=True):
            source = gr.Dropdown(workflow_sources(ctx), value=DEFAULT_SOURCE, label="Open", scale=4)
            refresh = gr.Button("Refresh", scale=0, min_width=90)
        upload = gr.File(label="...or drop a workflow (.json, or a .png that carries one)",
                         file_types=[".json", ".png"], type="filepath", height=120)
    status = gr.Markdown(first.status)
    workflow, fields, results = gr.State(first.workflow), gr.State(first.fields), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            form_area = gr.Column()
            with gr.Row(equal_height=True):
                name = gr.Textbox(first.name, label="Save as", scale=3, interactive=True)
                save_button = gr.Button("Save", scale=0, min_width=90)
            with gr.Accordion("API-format JSON", open=False):
                json_view = gr.Code(first.json_text, language="json", interactive=False)
        with gr.Column(scale=1):
            with gr.Row():
                run_button = gr.Button("Run", variant="primary")
                interrupt = gr.Button("Interrupt", variant="stop")
            progress = gr.HTML("")
            preview = gr.Image(label="Preview", type="pil", interactive=False, height=200)
            gallery = gr.Gallery(label="Images", columns=4, height="auto", interactive=False, object_fit="contain")
            outputs_view = gr.JSON(label="Outputs")
    tab = WorkflowsTab(source, workflow, fields, json_view, status, name, gallery)

    with form_area:
        @gr.render(inputs=[fields])
        def form(field_dicts: list[dict]):
            specs = [Field(**f) for f in field_dicts or []]
            widgets = []
            for node_id, group in groupby(specs, key=lambda f: f.node_id):
                group = list(group)
                with gr.Group():
                    gr.Markdown(f"**{group[0].node_title}** &nbsp;#{node_id}")
                    widgets += [_widget(ctx, f) for f in group]

            def run_edited(current, spec_dicts, *values):
                yield from run(ctx, edited(current, spec_dicts, values))

            def save_edited(save_name, current, spec_dicts, *values):
                updated = edited(current, spec_dicts, values)
                message, sources = save(ctx, save_name, updated)
                return message, sources, updated, json.dumps(updated, indent=2)

            run_button.click(run_edited, inputs=[workflow, fields, *widgets],
                             outputs=[progress, preview, gallery, outputs_view, results, workflow, json_view],
                             concurrency_limit=None)
            save_button.click(save_edited, inputs=[name, workflow, fields, *widgets],
                              outputs=[status, source, workflow, json_view])

    source.input(lambda value: open_source(ctx, value), inputs=[source], outputs=tab.opened_outputs)
    upload.upload(lambda path: open_upload(ctx, path), inputs=[upload], outputs=tab.opened_outputs)
    refresh.click(lambda value: gr.Dropdown(choices=workflow_sources(ctx), value=value), inputs=[source],
                  outputs=[source])
    interrupt.click(lambda state: stop_jobs(ctx, (state or {}).get("jobs", [])) and None, inputs=[results],
                    outputs=None, queue=False)
    return tab
