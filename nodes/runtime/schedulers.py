"""Sampler and scheduler names (ComfyUI's, and A1111's display names) -> a diffusers scheduler.

Every scheduler is built from the model's own scheduler config (`Cls.from_config(config, **overrides)`),
so betas, prediction type (v_prediction for SD2-768) and zero-terminal-SNR settings come from the model;
the sampler name picks the class and solver options, the scheduler name the spacing of the steps.
"""
from __future__ import annotations

import inspect

from diffusers import (DDIMScheduler, DEISMultistepScheduler, DPMSolverMultistepScheduler,
                       DPMSolverSinglestepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler,
                       LCMScheduler, LMSDiscreteScheduler, UniPCMultistepScheduler)

from ..formats.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES


class EulerAncestralShaped(EulerAncestralDiscreteScheduler):
    """Euler ancestral on karras / exponential / beta sigmas, which its diffusers class cannot make.

    Its step only reads `sigmas` and `timesteps`, so both are taken from an EulerDiscreteScheduler of
    the same config, which can."""

    sigma_options: dict = {}

    def set_timesteps(self, num_inference_steps: int, device=None):
        super().set_timesteps(num_inference_steps, device=device)
        if self.sigma_options:
            shaped = EulerDiscreteScheduler.from_config(self.config, **self.sigma_options)
            shaped.set_timesteps(num_inference_steps, device=device)
            self.timesteps, self.sigmas = shaped.timesteps, shaped.sigmas


_SDE_SINGLESTEP = (DPMSolverSinglestepScheduler,
                   {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "lower_order_final": True})
_DPMPP_2M_SDE = (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2})
_DPMPP_3M_SDE = (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3})

# ComfyUI sampler name -> (diffusers class, options), in the order of sampler_names.SAMPLER_NAMES.
SAMPLERS: dict[str, tuple[type, dict]] = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralShaped, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpm_2": (KDPM2DiscreteScheduler, {}),
    "dpm_2_ancestral": (KDPM2AncestralDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    # DPM++ SDE is k-diffusion's two-stage single-step SDE solver. diffusers' DPMSolverSDEScheduler needs
    # torchsde and draws its noise from one Brownian tree per batch, so image i of a batch would not
    # match its seed alone; the single-step DPM-Solver++(2) in SDE form is the same method family
    # with per-image noise.
    "dpmpp_sde": _SDE_SINGLESTEP,
    "dpmpp_sde_gpu": _SDE_SINGLESTEP,
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": _DPMPP_2M_SDE,
    "dpmpp_2m_sde_gpu": _DPMPP_2M_SDE,
    "dpmpp_3m_sde": _DPMPP_3M_SDE,
    "dpmpp_3m_sde_gpu": _DPMPP_3M_SDE,
    "lcm": (LCMScheduler, {}),
    "deis": (DEISMultistepScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    # diffusers' bh1 update is infinite on a step down to sigma 0, so this one stops at sigma_min
    "uni_pc": (UniPCMultistepScheduler, {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}),
    "uni_pc_bh2": (UniPCMultistepScheduler, {"solver_type": "bh2"}),
}

_NO_SHAPE = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}

# ComfyUI scheduler name -> spacing and sigma shape, in ComfyUI's order. "linspace" spans the whole
# trained range (t = 999 .. 0) like ComfyUI's and k-diffusion's schedules; the sigma shapes take
# their end points from it.
SCHEDULES: dict[str, dict] = {
    "simple": {**_NO_SHAPE, "timestep_spacing": "trailing"},
    "sgm_uniform": {**_NO_SHAPE, "timestep_spacing": "trailing"},
    "karras": {**_NO_SHAPE, "timestep_spacing": "linspace", "use_karras_sigmas": True},
    "exponential": {**_NO_SHAPE, "timestep_spacing": "linspace", "use_exponential_sigmas": True},
    "ddim_uniform": {**_NO_SHAPE, "timestep_spacing": "leading", "steps_offset": 1},
    "beta": {**_NO_SHAPE, "timestep_spacing": "linspace", "use_beta_sigmas": True},
    "normal": {**_NO_SHAPE, "timestep_spacing": "linspace"},
}

assert list(SAMPLERS) == SAMPLER_NAMES and list(SCHEDULES) == SCHEDULER_NAMES, "one name table"

# Schedulers whose samples are x0 + sigma * noise (k-diffusion's form, model input scaled by
# 1/sqrt(sigma^2 + 1)); the others keep sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * noise.
_SIGMA_SPACE = (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler,
                KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler, LMSDiscreteScheduler)


def build(scheduler_config: dict, sampler_name: str, scheduler: str):
    """A fresh diffusers scheduler for this sampler and schedule, built from the model's config."""
    if sampler_name not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler_name!r}; known: {', '.join(SAMPLER_NAMES)}")
    if scheduler not in SCHEDULES:
        raise ValueError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULER_NAMES)}")
    cls, options = SAMPLERS[sampler_name]
    schedule = SCHEDULES[scheduler]
    shaped = {k: v for k, v in schedule.items() if k in _NO_SHAPE and v}
    if cls is DDIMScheduler and schedule["timestep_spacing"] == "linspace":
        # DDIM steps back a fixed stride, so it only fits evenly strided grids. DDIM with eta 0 is
        # Euler's method in sigma space (ComfyUI's ddim is Euler too), so the other schedules use that.
        cls = EulerDiscreteScheduler
    # Keep what this class takes: model configs carry other classes' keys (PNDM's skip_prk_steps), and
    # LCM, which samples on the timestep grid it was distilled on, has no sigma-shape options.
    accepted = inspect.signature(cls.__init__).parameters
    built = cls.from_config({k: v for k, v in {**scheduler_config, **schedule, **options}.items() if k in accepted})
    if isinstance(built, EulerAncestralShaped):
        built.sigma_options = shaped
    return built


def in_sigma_space(scheduler) -> bool:
    """Whether this scheduler's samples are x0 + sigma * noise rather than the variance-preserving form."""
    return isinstance(scheduler, _SIGMA_SPACE)
