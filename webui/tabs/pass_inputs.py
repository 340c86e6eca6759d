"""The generation tabs' model and pass settings: VAE, clip skip and the random numbers (every tab), the
refiner (txt2img and img2img) and hires fix (txt2img), with A1111's labels and defaults. Their values go into
GenerationParams under the names used here (webui/generation_passes.py adds them to the workflow)."""
from __future__ import annotations

import gradio as gr
from gradio.components import Component

from ...nodes.formats.png_metadata import HIRES_UPSCALERS
from ...nodes.formats.sampler_names import A1111_SAMPLERS, A1111_SCHEDULES
from ..context import ServerContext
from ..parameters import RANDN_SOURCES, model_upscalers, slider

AUTOMATIC_VAE = "Automatic"  # the checkpoint's own VAE
NO_REFINER = "None"
SAME_SAMPLER, SAME_SCHEDULER = "Use same sampler", "Use same scheduler"
HIRES_DENOISE = 0.7  # A1111's default


def vae_choices(ctx: ServerContext) -> list[str]:
    return [AUTOMATIC_VAE, *ctx.folders.list("vae")]


def refiner_choices(ctx: ServerContext) -> list[str]:
    return [NO_REFINER, *ctx.folders.list("checkpoints")]


def hires_upscaler_choices(ctx: ServerContext) -> list[str]:
    """The built-in upscalers, then the upscale model files by their A1111 names (as the Extras tab)."""
    return [*HIRES_UPSCALERS, *model_upscalers(ctx.folders)]


def model_inputs(ctx: ServerContext) -> dict[str, Component]:
    """VAE and clip skip (in the current row)."""
    return {"vae": gr.Dropdown(vae_choices(ctx), value=AUTOMATIC_VAE, label="VAE", scale=2),
            "clip_skip": gr.Slider(**slider("clip_skip"), value=1, label="Clip skip", scale=1)}


def random_number_inputs() -> dict[str, Component]:
    """A1111's variation seed and seed resize (its "Extra" by the seed), random number source and eta
    noise seed delta (A1111 has those two under Settings)."""
    with gr.Accordion("Extra: variation seed, random numbers", open=False):
        with gr.Row():
            inputs = {"subseed": gr.Number(-1, precision=0, label="Variation seed (-1: random)", scale=2),
                      "subseed_strength": gr.Slider(**slider("subseed_strength"), value=0,
                                                    label="Variation strength", scale=2)}
        with gr.Row():
            inputs["seed_resize_from_w"] = gr.Slider(**slider("seed_resize_from_w"), value=0,
                                                     label="Resize seed from width (0: off)")
            inputs["seed_resize_from_h"] = gr.Slider(**slider("seed_resize_from_h"), value=0,
                                                     label="Resize seed from height (0: off)")
        with gr.Row():
            inputs["randn_source"] = gr.Dropdown(
                list(RANDN_SOURCES), value="GPU", label="Random number generator source", scale=2,
                info="GPU and NV: the numbers A1111 draws on an NVIDIA card, on any device here. CPU: A1111's "
                     "CPU numbers.")
            inputs["eta_noise_seed_delta"] = gr.Number(0, precision=0, minimum=0, label="Eta noise seed delta (ENSD)",
                                                       info="Ancestral samplers' step noise from seed + delta.",
                                                       scale=1)
    return inputs


def refiner_inputs(ctx: ServerContext) -> dict[str, Component]:
    with gr.Accordion("Refiner", open=False), gr.Row():
        return {"refiner_checkpoint": gr.Dropdown(refiner_choices(ctx), value=NO_REFINER, label="Checkpoint", scale=3),
                "refiner_switch_at": gr.Slider(**slider("refiner_switch_at"), value=0.8, label="Switch at", scale=2)}


def hires_inputs(ctx: ServerContext) -> dict[str, Component]:
    inputs: dict[str, Component] = {}
    with gr.Accordion("Hires. fix", open=False):
        inputs["enable_hr"] = gr.Checkbox(False, label="Enable hires. fix")
        with gr.Row():
            inputs["hr_upscaler"] = gr.Dropdown(hires_upscaler_choices(ctx), value="Latent", label="Upscaler")
            inputs["hr_second_pass_steps"] = gr.Slider(**slider("hr_second_pass_steps"), value=0, label="Hires steps (0: same)")
            inputs["denoising_strength"] = gr.Slider(**slider("denoising_strength"), value=HIRES_DENOISE,
                                                     label="Denoising strength")
        with gr.Row():
            inputs["hr_scale"] = gr.Slider(**slider("hr_scale"), value=2, label="Upscale by")
            inputs["hr_resize_x"] = gr.Slider(**slider("hr_resize_x"), value=0, label="Resize width to")
            inputs["hr_resize_y"] = gr.Slider(**slider("hr_resize_y"), value=0, label="Resize height to")
        with gr.Row():  # A1111's names, as the main sampler dropdown (generation resolves them)
            inputs["hr_sampler_name"] = gr.Dropdown([SAME_SAMPLER, *A1111_SAMPLERS], value=SAME_SAMPLER,
                                                    label="Hires sampler")
            inputs["hr_scheduler"] = gr.Dropdown([SAME_SCHEDULER, *A1111_SCHEDULES], value=SAME_SCHEDULER,
                                                 label="Hires schedule type")
        inputs["hr_prompt"] = gr.Textbox(label="Hires prompt (empty: the same)", lines=1)
        inputs["hr_negative_prompt"] = gr.Textbox(label="Hires negative prompt (empty: the same)", lines=1)
    return inputs


def refreshed(ctx: ServerContext, name: str, current: str | None) -> gr.Dropdown:
    """A model dropdown ("vae", "refiner_checkpoint" or "hr_upscaler") with the folder read again."""
    choices = {"vae": vae_choices, "hr_upscaler": hires_upscaler_choices}.get(name, refiner_choices)(ctx)
    return gr.Dropdown(choices=choices, value=current if current in choices else choices[0])
