"""UniPC, from diffusers, walking the same sigmas as the k-diffusion samplers.

diffusers' UniPCMultistepScheduler keeps samples in the variance-preserving form and reads the noise
level of each step from its `sigmas`; here those are ComfyUI's schedule, it is given the denoiser's
clean-latent prediction directly (prediction_type "sample"), and it runs as ComfyUI's uni_pc does:
third order (lower near the end), the last step to sigma 0.001 instead of 0, where UniPC's update is
undefined. tests/test_comfy_parity.py measures it against ComfyUI's own UniPC: equal up to float rounding.
"""
from __future__ import annotations

import math

import torch
from diffusers import UniPCMultistepScheduler

from .k_samplers import Sampler


def _unipc(solver_type: str):
    def run(model, x, sigmas, noise, callback):
        if len(sigmas) <= 1:
            return x
        walk = sigmas.clone()
        if walk[-1] == 0:
            walk[-1] = 0.001
        steps = len(walk) - 1
        sched = UniPCMultistepScheduler(prediction_type="sample", solver_type=solver_type, lower_order_final=True,
                                        solver_order=max(1, min(3, steps - 1)), predict_x0=True)
        sched.set_timesteps(steps)
        sched.sigmas = walk.float()
        sched.timesteps = torch.arange(steps - 1, -1, -1)
        sched.set_begin_index(0)
        sample = x / math.sqrt(1.0 + float(walk[0]) ** 2)
        for i in range(steps):
            denoised = model(sample * math.sqrt(1.0 + float(walk[i]) ** 2), sigmas[i])
            callback(i, denoised)
            sample = sched.step(denoised, sched.timesteps[i], sample).prev_sample
        return sample * math.sqrt(1.0 + float(walk[-1]) ** 2)
    return run


SAMPLERS = {"uni_pc": Sampler(_unipc("bh1")), "uni_pc_bh2": Sampler(_unipc("bh2"))}
