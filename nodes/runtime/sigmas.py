"""Noise levels: the model's trained sigmas and the step schedules built on them, as ComfyUI builds them.

A discrete-time model (SD 1.x/2.x/XL) was trained on 1000 noise levels; in k-diffusion's terms level t
has sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t). A step schedule is a descending list of sigmas
ending in 0; the UNet is called with the trained timestep nearest to each sigma (ComfyUI's
ModelSamplingDiscrete), or under A1111's noise rules with the timestep interpolated between the two
trained ones around it (k-diffusion's CompVisDenoiser, unquantized as A1111 runs it), and the samplers in
k_samplers.py walk the list.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.stats
import torch

from ..formats.sampler_names import SCHEDULER_NAMES



class DiscreteSchedule:
    """The model's 1000 trained sigmas, from its diffusers scheduler config."""

    def __init__(self, config: dict):
        steps = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        kind = config.get("beta_schedule", "scaled_linear")
        if config.get("trained_betas") is not None:
            betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
        elif kind == "scaled_linear":  # LDM's "linear": evenly spaced in sqrt(beta)
            betas = torch.linspace(start ** 0.5, end ** 0.5, steps, dtype=torch.float64) ** 2
        elif kind == "linear":
            betas = torch.linspace(start, end, steps, dtype=torch.float64)
        else:
            from diffusers import DDPMScheduler  # the rarer shapes, as diffusers defines them
            betas = DDPMScheduler.from_config({**config, "beta_schedule": kind}).betas.to(torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if config.get("rescale_betas_zero_snr"):
            sigmas = _zero_terminal_snr(sigmas)
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()
        self.prediction_type = config.get("prediction_type", "epsilon")

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma) -> torch.Tensor:
        """The trained timestep whose sigma is nearest in log space (an integer, as a float tensor)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32).cpu()
        dists = sigma.log().reshape(-1)[None, :] - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).reshape(sigma.shape).float()

    def interpolated_timestep(self, sigma) -> torch.Tensor:
        """The fractional timestep whose interpolated log sigma is sigma's (k-diffusion's sigma_to_t with
        quantize off), clamped to the trained range."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32).cpu()
        log_sigma = sigma.log().reshape(-1)
        dists = log_sigma[None, :] - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(self.log_sigmas) - 2)
        high = low + 1
        w = ((self.log_sigmas[low] - log_sigma) / (self.log_sigmas[low] - self.log_sigmas[high])).clamp(0, 1)
        return ((1 - w) * low + w * high).reshape(sigma.shape)

    def sigma(self, timestep) -> torch.Tensor:
        """Sigma at a (fractional) timestep, interpolating log sigma."""
        t = torch.as_tensor(timestep, dtype=torch.float32).clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))


def _zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Rescale so the last level is (almost) pure noise, as ComfyUI's zsnr option."""
    root = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alphas_bar = root ** 2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


# -- step schedules: `steps` sigmas, high to low, then 0 -------------------------------------------------

def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    ramp = torch.arange(steps, dtype=torch.float).div_(max(steps - 1, 1))
    return _append_zero((ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan_())


def simple(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    stride = len(schedule.sigmas) / steps
    return torch.FloatTensor([float(schedule.sigmas[-(1 + int(i * stride))]) for i in range(steps)] + [0.0])


def ddim_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    sigmas, index = schedule.sigmas, 1
    if math.isclose(float(sigmas[index]), 0, abs_tol=1e-5):
        steps, out = steps + 1, []
    else:
        out = [0.0]
    stride = max(len(sigmas) // steps, 1)
    while index < len(sigmas):
        out.append(float(sigmas[index]))
        index += stride
    return torch.FloatTensor(out[::-1])


def normal(schedule: DiscreteSchedule, steps: int, sgm: bool = False) -> torch.Tensor:
    start, end = schedule.timestep(schedule.sigma_max), schedule.timestep(schedule.sigma_min)
    zero_at_end = True
    if sgm:
        timesteps = torch.linspace(float(start), float(end), steps + 1)[:-1]
    else:
        if math.isclose(float(schedule.sigma(end)), 0, abs_tol=1e-5):
            steps, zero_at_end = steps + 1, False
        timesteps = torch.linspace(float(start), float(end), steps)
    sigmas = [float(schedule.sigma(t)) for t in timesteps]
    return torch.FloatTensor(sigmas + ([0.0] if zero_at_end else []))


def beta(schedule: DiscreteSchedule, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(0.6, 0.6) distribution (arXiv 2407.12173)."""
    last = len(schedule.sigmas) - 1
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta_) * last)
    sigmas, previous = [], -1
    for t in ts:
        if t != previous:
            sigmas.append(float(schedule.sigmas[int(t)]))
        previous = t
    return torch.FloatTensor(sigmas + [0.0])


def linear_quadratic(schedule: DiscreteSchedule, steps: int, threshold_noise: float = 0.025) -> torch.Tensor:
    """Mochi's schedule: linear in the first half, quadratic after, as fractions of sigma_max."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quad_coef = step_diff / (linear_steps * quadratic_steps ** 2)
        lin_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps ** 2)
        const = quad_coef * (linear_steps ** 2)
        quadratic = [quad_coef * (i ** 2) + lin_coef * i + const for i in range(linear_steps, steps)]
        fractions = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.FloatTensor(fractions) * schedule.sigmas[-1]


def build(schedule: DiscreteSchedule, scheduler: str, steps: int) -> torch.Tensor:
    """ComfyUI's calculate_sigmas: `steps` + 1 sigmas of the named schedule."""
    if scheduler == "karras":
        return karras(steps, schedule.sigma_min, schedule.sigma_max)
    if scheduler == "exponential":
        return exponential(steps, schedule.sigma_min, schedule.sigma_max)
    if scheduler == "kl_optimal":
        return kl_optimal(steps, schedule.sigma_min, schedule.sigma_max)
    if scheduler == "sgm_uniform":
        return normal(schedule, steps, sgm=True)
    by_table = {"simple": simple, "ddim_uniform": ddim_uniform, "beta": beta, "normal": normal,
                "linear_quadratic": linear_quadratic}
    if scheduler not in by_table:
        raise ValueError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULER_NAMES)}")
    return by_table[scheduler](schedule, steps)
