"""depth2img: img2img guided by the init image's depth map -- through a depth ControlNet
(workflows/depth2img.json), or into the UNet of an SD 2 depth checkpoint (workflows/depth2img_sd2.json)."""
from __future__ import annotations

import gradio as gr
from gradio.components import Component

from ..context import ServerContext
from ..generation import depth_controlnets, is_depth_checkpoint
from .common import GenerationTab, generation_tab
from .img2img import init_image_inputs


def depth_note(ctx: ServerContext, checkpoint: str | None) -> str:
    if is_depth_checkpoint(ctx.folders, checkpoint):
        return "SD 2 depth checkpoint: the depth map goes straight into its UNet (no ControlNet)."
    return "The depth map guides the image through the depth ControlNet."


def build(ctx: ServerContext) -> GenerationTab:
    def depth_inputs() -> dict[str, Component]:
        inputs = init_image_inputs(denoise=0.8, latent_upscale=False)
        controlnets = depth_controlnets(ctx.folders)
        inputs["controlnet"] = gr.Dropdown(controlnets, value=controlnets[0] if controlnets else None,
                                           label="Depth ControlNet", allow_custom_value=True)
        return inputs

    tab = generation_tab(ctx, "depth2img", depth_inputs, with_depth=True)
    checkpoint = tab.inputs["checkpoint"]
    with gr.Row():
        note = gr.Markdown(depth_note(ctx, checkpoint.value))
    checkpoint.change(lambda name: depth_note(ctx, name), inputs=[checkpoint], outputs=[note])
    return tab
