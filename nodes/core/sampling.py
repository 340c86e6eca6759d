"""Sampler nodes: KSampler and KSamplerAdvanced."""
from __future__ import annotations

from ..declare import Combo, Float, Input, Int, Node, Output, pixel_ints
from ..formats.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES
from ..runtime import noise, sampling

MAX_SEED = 2 ** 64 - 1


def _common_inputs(seed_name: str) -> tuple:
    return (Int(seed_name, default=0, min=0, max=MAX_SEED, control_after_generate=True),
            Int("steps", default=20, min=1, max=10000),
            Float("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
            Combo("sampler_name", choices=SAMPLER_NAMES),
            Combo("scheduler", choices=SCHEDULER_NAMES),
            Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
            Input("latent_image", "LATENT"))


# How the seed becomes noise and how denoise counts img2img steps: ComfyUI's (the default, so shared
# workflows reproduce their images) or A1111's (per-image seeds seed + i; what the tabs and /sdapi write),
# with its CPU or NVIDIA random numbers. Both inputs come last, so ComfyUI's widget order is unchanged.
NOISE_RULE = Combo("noise_rule", choices=noise.NOISE_RULES, default="comfyui", optional=True, added=True,
                   tooltip="comfyui: one noise tensor per batch from the seed, ComfyUI's step noise (as drawn on "
                           "a CPU) and denoise schedule. comfyui_nv: the same with the step noise ComfyUI draws on "
                           "an NVIDIA GPU. a1111: image i from seed + i, A1111's img2img steps, CPU random numbers "
                           "(A1111's RNG: CPU). a1111_nv: the same with NVIDIA GPU random numbers (A1111's GPU "
                           "and NV).")
SEED_DELTA = Int("eta_noise_seed_delta", default=0, min=0, max=MAX_SEED, optional=True, added=True,
                 tooltip="A1111's eta noise seed delta (ENSD): step noise from seed + delta. a1111 rules only.")


class KSampler(Node):
    """Denoises a latent guided by the conditioning; denoise < 1 keeps part of the input (img2img)."""

    inputs = (Input("model", "MODEL"), *_common_inputs("seed"),
              Float("denoise", default=1.0, min=0.0, max=1.0, step=0.01), NOISE_RULE, SEED_DELTA)
    outputs = (Output("LATENT"),)
    category = "sampling"
    display_name = "KSampler"

    def run(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
            noise_rule="comfyui", eta_noise_seed_delta=0):
        return (sampling.sample(model, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                                scheduler, denoise=denoise, progress=self.ctx.progress, noise_rule=noise_rule,
                                seed_delta=eta_noise_seed_delta),)


class KSamplerAdvanced(Node):
    """KSampler over a part of the schedule, so one generation can be split across samplers and models."""

    inputs = (Input("model", "MODEL"), Combo("add_noise", choices=("enable", "disable")),
              *_common_inputs("noise_seed"),
              Int("start_at_step", default=0, min=0, max=10000),
              Int("end_at_step", default=10000, min=0, max=10000),
              Combo("return_with_leftover_noise", choices=("disable", "enable")), NOISE_RULE, SEED_DELTA)
    outputs = (Output("LATENT"),)
    category = "sampling"
    display_name = "KSampler (Advanced)"

    def run(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, start_at_step, end_at_step, return_with_leftover_noise, noise_rule="comfyui",
            eta_noise_seed_delta=0):
        return (sampling.sample(model, positive, negative, latent_image, noise_seed, steps, cfg, sampler_name,
                                scheduler, start_step=start_at_step, end_step=end_at_step,
                                add_noise=add_noise == "enable",
                                return_with_leftover_noise=return_with_leftover_noise == "enable",
                                progress=self.ctx.progress, noise_rule=noise_rule, seed_delta=eta_noise_seed_delta),)


class VariationSeed(Node):
    """A1111's variation seed and "resize seed from": the samplers of this latent (under an a1111 noise
    rule) start from their seed's noise slerped towards the variation seed's by `subseed_strength`, drawn
    as if the image were seed_resize_from_w x seed_resize_from_h (0: its own size) and centred."""

    inputs = (Input("samples", "LATENT"),
              Int("subseed", default=0, min=0, max=MAX_SEED, control_after_generate=True),
              Float("subseed_strength", default=0.0, min=0.0, max=1.0, step=0.01),
              *pixel_ints("seed_resize_from_w", "seed_resize_from_h", step=8))
    outputs = (Output("LATENT"),)
    category = "sampling"
    display_name = "Variation Seed (A1111)"

    def run(self, samples, subseed, subseed_strength, seed_resize_from_w, seed_resize_from_h):
        resize = (seed_resize_from_w, seed_resize_from_h) if seed_resize_from_w and seed_resize_from_h else None
        if resize is not None and min(resize) < 8:
            raise ValueError("seed_resize_from_w and seed_resize_from_h are pixels: at least 8 each, or 0")
        return ({**samples, "variation": {"subseed": subseed, "strength": subseed_strength, "resize_from": resize}},)


NODES = {"KSampler": KSampler, "KSamplerAdvanced": KSamplerAdvanced, "VariationSeed": VariationSeed}
