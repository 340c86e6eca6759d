"""Extras: upscale a single image, a batch of uploaded files or a folder's images, by a factor or to a size, with a first
upscaler and a second one blended in by its visibility (A1111's Extras tab). The work is a workflow
(webui/extras.py) on the shared queue, so it shows in Queue & history; results are saved to
output/extras/."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ...nodes.core.image import IMAGE_EXTENSIONS
from .. import extras
from ..a1111_api import open_image_bytes
from ..bad_request import BadRequest
from ..context import ServerContext
from .running import SubmitError, idle_html, output_files, progress_html, submit_all, watch

SOURCES = ("Single image", "Batch from files", "Batch from folder")
RESIZE_MODES = ("Scale by", "Scale to")


@dataclass
class ExtrasTab:
    source: gr.State
    image: gr.Image
    files: gr.File
    folder: gr.File
    inputs: dict[str, Any]
    run: gr.Button
    progress: gr.HTML
    gallery: gr.Gallery
    info: gr.Textbox


def form_params(form: dict) -> extras.ExtrasParams:
    """ExtrasParams from the tab's widget values."""
    return extras.ExtrasParams(
        resize_mode=RESIZE_MODES.index(form.get("resize_mode") or RESIZE_MODES[0]),
        upscaling_resize=float(form["upscaling_resize"]), upscaling_resize_w=int(form["upscaling_resize_w"]),
        upscaling_resize_h=int(form["upscaling_resize_h"]), upscaling_crop=bool(form["upscaling_crop"]),
        upscaler_1=form["upscaler_1"] or "None", upscaler_2=form["upscaler_2"] or "None",
        extras_upscaler_2_visibility=float(form["extras_upscaler_2_visibility"]))


def _open(path: str | Path):
    name = Path(path).name
    try:
        return open_image_bytes(name, Path(path).read_bytes())
    except OSError as exc:
        raise BadRequest(name, f"can't be read ({exc.strerror or exc})") from None


def _uploaded_paths(source: str, image: str | None, files: list | None, folder: list | None) -> list[str]:
    if source == SOURCES[0]:
        if not image:
            raise BadRequest("image", "drop an image to upscale first")
        return [image]
    if source == SOURCES[2]:  # every image file of the folder; other files are passed over
        paths = sorted(str(p) for p in folder or [] if str(p).lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise BadRequest("folder", "choose a folder that holds image files first")
        return paths
    paths = [str(p) for p in files or [] if p]
    if not paths:
        raise BadRequest("files", "drop one or more image files first")
    return paths


def upscale(ctx: ServerContext, source: str, image: str | None, files: list | None, form: dict,
            folder: list | None = None) -> Iterator[tuple[str, Any, str]]:
    """Queue the upscale of the single image, the files or the folder's images and stream (progress,
    gallery, info)."""
    try:
        params = form_params(form)
        images = [_open(path) for path in _uploaded_paths(source, image, files, folder)]
        parameters = [extras.source_parameters(picture) for picture in images]
        stored = extras.store_inputs(ctx.folders, images)
        workflow, savers = extras.build_workflow(params, ctx.folders, stored, save=True, max_pixels=ctx.max_pixels)
        job_ids = submit_all(ctx, [workflow])
    except (BadRequest, SubmitError) as exc:
        raise gr.Error(str(exc)) from None
    info = extras.infotext(params)
    for state in watch(ctx, job_ids):
        if not state.finished:
            yield progress_html(state, "Upscale", [workflow]), gr.skip(), info
            continue
        job = state.done[job_ids[0]]
        paths = output_files(ctx, job.outputs or {}, savers)
        for path, source_info in zip(paths, parameters):
            extras.write_text_chunks(path, source_info, info)
        yield progress_html(state, "Upscale", [workflow]), [str(p) for p in paths], info


def refreshed_upscalers(ctx: ServerContext, first: str, second: str) -> tuple[gr.Dropdown, gr.Dropdown]:
    names = extras.upscaler_names(ctx.folders)
    return (gr.Dropdown(choices=names, value=first if first in names else "None"),
            gr.Dropdown(choices=names, value=second if second in names else "None"))


def build(ctx: ServerContext) -> ExtrasTab:
    names = extras.upscaler_names(ctx.folders)
    inputs: dict[str, Any] = {}
    source = gr.State(SOURCES[0])
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Tabs():
                with gr.Tab(SOURCES[0], id="extras_single") as single_tab:
                    image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=320,
                                     elem_id="extras_image")
                with gr.Tab(SOURCES[1], id="extras_batch") as batch_tab:
                    files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                                    elem_id="extras_files")
                with gr.Tab(SOURCES[2], id="extras_folder") as folder_tab:
                    folder = gr.File(label="A folder of images", file_count="directory", type="filepath",
                                     elem_id="extras_folder")
            inputs["resize_mode"] = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize",
                                             elem_id="extras_resize_mode")
            with gr.Group(visible=True) as scale_by:
                inputs["upscaling_resize"] = gr.Slider(1.0, extras.MAX_SCALE, value=4, step=0.05, label="Scale by",
                                                       elem_id="extras_upscaling_resize")
            with gr.Group(visible=False) as scale_to:
                with gr.Row():
                    inputs["upscaling_resize_w"] = gr.Slider(64, 8192, value=512, step=8, label="Width")
                    inputs["upscaling_resize_h"] = gr.Slider(64, 8192, value=512, step=8, label="Height")
                inputs["upscaling_crop"] = gr.Checkbox(value=True, label="Crop to fit")
            with gr.Row(equal_height=True):
                inputs["upscaler_1"] = gr.Dropdown(names, value="None", label="Upscaler 1", scale=4,
                                                   elem_id="extras_upscaler_1")
                refresh = gr.Button("Refresh", scale=0, min_width=90)
            with gr.Row():
                inputs["upscaler_2"] = gr.Dropdown(names, value="None", label="Upscaler 2",
                                                   elem_id="extras_upscaler_2")
                inputs["extras_upscaler_2_visibility"] = gr.Slider(0.0, 1.0, value=0.0, step=0.001,
                                                                   label="Upscaler 2 visibility")
        with gr.Column(scale=1):
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            progress = gr.HTML(idle_html())
            gallery = gr.Gallery(label="Results", columns=4, height="auto", interactive=False, object_fit="contain",
                                 elem_id="extras_gallery")
            info = gr.Textbox(label="Postprocess parameters", lines=2, interactive=False, elem_id="extras_info")
    for tab, name in ((single_tab, SOURCES[0]), (batch_tab, SOURCES[1]), (folder_tab, SOURCES[2])):
        tab.select(lambda name=name: name, outputs=[source])
    inputs["resize_mode"].change(lambda mode: (gr.Group(visible=mode == RESIZE_MODES[0]),
                                               gr.Group(visible=mode == RESIZE_MODES[1])),
                                 inputs=[inputs["resize_mode"]], outputs=[scale_by, scale_to], queue=False)
    names_in_order = list(inputs)

    def run_upscale(source_value, image_value, files_value, folder_value, *values):
        yield from upscale(ctx, source_value, image_value, files_value, dict(zip(names_in_order, values)),
                           folder_value)

    # The handler waits on the queue, which serialises the work: no need to hold other users back.
    run.click(run_upscale, inputs=[source, image, files, folder, *inputs.values()],
              outputs=[progress, gallery, info], concurrency_limit=None)
    refresh.click(lambda a, b: refreshed_upscalers(ctx, a, b), inputs=[inputs["upscaler_1"], inputs["upscaler_2"]],
                  outputs=[inputs["upscaler_1"], inputs["upscaler_2"]])
    return ExtrasTab(source, image, files, folder, inputs, run, progress, gallery, info)
