"""The browser UI: Gradio tabs over the shared queue. `build_ui(ctx)` is mounted at "/" next to the APIs
(pass `allowed_paths(ctx)` to gr.mount_gradio_app so the galleries may show the saved images)."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..context import ServerContext
from . import depth2img, extras, history, img2img, inpaint, models, pnginfo, txt2img, workflows
from .common import GenerationTab, refresh_checkpoints
from .generate import send_image
from .page_script import PAGE_SCRIPT
from .running import refused

GRAPH_EDITOR_URL = "/graph/"
TAB_IDS = ("txt2img", "img2img", "inpaint", "depth2img", "extras", "workflows", "pnginfo", "history", "models")


def allowed_paths(ctx: ServerContext) -> list[str]:
    """Folders whose files the UI shows: saved images (output) and previews such as depth maps (temp)."""
    return [str(ctx.folders.output_dir), str(ctx.folders.temp_dir)]


def build_ui(ctx: ServerContext) -> gr.Blocks:
    with gr.Blocks(title="Inkwash") as blocks:
        with gr.Row():
            gr.Markdown("## Inkwash")
            gr.HTML(f'<div style="text-align:right"><a href="{GRAPH_EDITOR_URL}" target="_blank" '
                    f'rel="noopener">Open the graph editor &#8599;</a></div>')
        with gr.Tabs() as tabs:
            generation: dict[str, GenerationTab] = {}
            for module in (txt2img, img2img, inpaint, depth2img):
                mode = module.__name__.rsplit(".", 1)[-1]
                with gr.Tab(mode, id=mode):
                    generation[mode] = module.build(ctx)
            with gr.Tab("Extras", id="extras"):
                extras.build(ctx)
            with gr.Tab("Workflows", id="workflows"):
                workflows_tab = workflows.build(ctx)
            with gr.Tab("PNG Info", id="pnginfo"):
                png_tab = pnginfo.build()
            with gr.Tab("Queue & history", id="history"):
                history_tab = history.build(ctx)
            with gr.Tab("Models", id="models"):
                models.build(ctx)
        _wire_send_to(generation, tabs)
        _wire_png_info(ctx, png_tab, generation, workflows_tab, tabs)
        _wire_reopen(ctx, history_tab, workflows_tab, tabs)
        blocks.load(None, js=PAGE_SCRIPT)
    return blocks


def _image_input(tab: GenerationTab):
    return tab.inputs["inpaint_image"] if tab.mode == "inpaint" else tab.inputs["init_image"]


def _wire_send_to(generation: dict[str, GenerationTab], tabs: gr.Tabs) -> None:
    for source in generation.values():
        for target_mode, button in source.send.items():
            target = generation[target_mode]

            def send(results, selected, target_mode=target_mode):
                return (*send_image(results, selected), gr.Tabs(selected=target_mode))

            button.click(send, inputs=[source.results, source.selected],
                         outputs=[_image_input(target), target.inputs["prompt"], target.inputs["negative_prompt"],
                                  tabs])


def _wire_png_info(ctx: ServerContext, png: pnginfo.PngInfoTab, generation: dict[str, GenerationTab],
                   workflows_tab: workflows.WorkflowsTab, tabs: gr.Tabs) -> None:
    def fields_of(mode: str) -> list:
        # the checkpoint's defaults follow the sent checkpoint without touching the sent values
        return [*(generation[mode].inputs[name] for name in pnginfo.SENT_FIELDS), generation[mode].checkpoint_before]

    def sent(text) -> tuple:
        values = pnginfo.sent_values(text, ctx.folders)
        at = pnginfo.SENT_FIELDS.index("checkpoint")
        checkpoint = values[at]
        if isinstance(checkpoint, str):  # the list again, titled: the file may be new since the page was built
            values[at] = refresh_checkpoints(ctx, checkpoint)
        return (*values, checkpoint, pnginfo.checkpoint_note(text, ctx.folders))

    png.send_txt2img.click(lambda text: (*sent(text), gr.Tabs(selected="txt2img")),
                           inputs=[png.parameters], outputs=[*fields_of("txt2img"), png.note, tabs])

    def to_img2img(path, text):
        if not path:
            raise refused("Drop an image first")
        return (*sent(text), path, gr.Tabs(selected="img2img"))

    png.send_img2img.click(to_img2img, inputs=[png.image, png.parameters],
                           outputs=[*fields_of("img2img"), png.note, generation["img2img"].inputs["init_image"], tabs])
    png.open_workflow.click(lambda path: (*workflows.open_upload(ctx, path), gr.Tabs(selected="workflows")),
                            inputs=[png.image], outputs=[*workflows_tab.opened_outputs, tabs])


def _wire_reopen(ctx: ServerContext, history_tab: history.HistoryTab, workflows_tab: workflows.WorkflowsTab,
                 tabs: gr.Tabs) -> None:
    def reopen(job_id):
        job = history.picked_job(ctx, job_id)
        opened = workflows.open_workflow(ctx, job.workflow, name=f"job-{job_id.strip()[:8]}")
        images = [(path, Path(path).name) for path in history.job_images(ctx, job)]
        return (*opened, images, gr.Tabs(selected="workflows"))

    history_tab.reopen.click(reopen, inputs=[history_tab.job_id],
                             outputs=[*workflows_tab.opened_outputs, workflows_tab.gallery, tabs])
