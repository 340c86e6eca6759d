"""inpaint: an image with a mask painted in the browser (or uploaded), over workflows/inpaint.json."""
from __future__ import annotations

import gradio as gr
from gradio.components import Component

from ..context import ServerContext
from ..parameters import slider
from .common import GenerationTab, generation_tab
from .generate import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT_CHOICES
from .img2img import RESIZE_CHOICES


def inpaint_inputs() -> dict[str, Component]:
    inputs: dict[str, Component] = {
        # The painted layer's alpha is the mask, whatever the brush colour.
        "inpaint_image": gr.ImageEditor(
            label="Image - paint over what to repaint", type="pil", image_mode="RGBA", height=420,
            brush=gr.Brush(colors=["#ff2d7a", "#ffffff", "#000000"]), layers=False, transforms=()),
    }
    with gr.Accordion("Upload a mask instead (white = repaint)", open=False):
        inputs["mask_image"] = gr.Image(label="Mask", type="pil", height=200)
    inputs["mask_blur"] = gr.Slider(**slider("mask_blur"), value=4, label="Mask blur")
    inputs["mask_mode"] = gr.Radio(MASK_MODES, value=MASK_MODES[0], type="index", label="Mask mode")
    inputs["inpainting_fill"] = gr.Radio(MASKED_CONTENT_CHOICES, value="original", type="index",
                                         label="Masked content")
    with gr.Row():
        inputs["inpaint_area"] = gr.Radio(INPAINT_AREAS, value=INPAINT_AREAS[0], type="index", label="Inpaint area")
        inputs["inpaint_full_res_padding"] = gr.Slider(**slider("inpaint_full_res_padding"), value=32,
                                                         label="Only masked padding, pixels")
    inputs["denoising_strength"] = gr.Slider(**slider("denoising_strength"), value=0.75, label="Denoising strength")
    inputs["resize_mode"] = gr.Radio(RESIZE_CHOICES[:3], value=RESIZE_CHOICES[0], type="index", label="Resize mode")
    return inputs


def build(ctx: ServerContext) -> GenerationTab:
    return generation_tab(ctx, "inpaint", inpaint_inputs)
