"""img2img: an init image, denoising strength and resize mode over workflows/img2img.json."""
from __future__ import annotations

import gradio as gr
from gradio.components import Component

from ..context import ServerContext
from ..parameters import RESIZE_MODES, slider
from .common import GenerationTab, generation_tab

RESIZE_CHOICES = [RESIZE_MODES[mode] for mode in sorted(RESIZE_MODES)]  # index = A1111's resize_mode


def init_image_inputs(denoise: float = 0.75, latent_upscale: bool = True) -> dict[str, Component]:
    """Init image, denoising strength and resize mode (shared with depth2img)."""
    choices = RESIZE_CHOICES if latent_upscale else RESIZE_CHOICES[:3]
    return {"init_image": gr.Image(label="Init image", type="pil", image_mode="RGBA", height=300),
            "denoising_strength": gr.Slider(**slider("denoising_strength"), value=denoise, label="Denoising strength"),
            "resize_mode": gr.Radio(choices, value=choices[0], type="index", label="Resize mode")}


def build(ctx: ServerContext) -> GenerationTab:
    return generation_tab(ctx, "img2img", init_image_inputs, refiner=True)
