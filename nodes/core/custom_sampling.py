"""ComfyUI's custom-sampling nodes: a sampler, a list of sigmas, noise and a guider as separate values
(SAMPLER, SIGMAS, NOISE, GUIDER), put together by SamplerCustom / SamplerCustomAdvanced."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..declare import Boolean, Combo, Float, Input, Int, Node, Output
from ..formats.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES
from ..runtime import sampling, sigmas as schedules
from ..runtime.model_types import Cond, DiffusionModel
from .sampling import MAX_SEED

CATEGORY = "sampling/custom_sampling"


@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: which sampler walks the sigmas."""
    name: str


@dataclass(frozen=True)
class NoiseSource:
    """NOISE: the starting noise, ComfyUI's rule from `seed`, or none. Step noise is seeded with `seed`
    either way (ComfyUI's DisableNoise has seed 0)."""
    seed: int
    enabled: bool = True


@dataclass(frozen=True)
class Guider:
    """GUIDER: the model and how its predictions are guided (cfg 1 and no negative: BasicGuider)."""
    model: DiffusionModel
    positive: list[Cond]
    negative: list[Cond]
    cfg: float


def _sample(noise_source: NoiseSource, guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor, latent: dict,
            progress) -> tuple[dict, dict]:
    return sampling.sample_sigmas(guider.model, guider.positive, guider.negative, latent, noise_source.seed, sigmas,
                                  guider.cfg, sampler.name, add_noise=noise_source.enabled, progress=progress)


def _table(model: DiffusionModel) -> schedules.DiscreteSchedule:
    return schedules.DiscreteSchedule(model.scheduler_config)


class KSamplerSelect(Node):
    """A sampler by name, for SamplerCustom."""

    inputs = (Combo("sampler_name", choices=SAMPLER_NAMES),)
    outputs = (Output("SAMPLER"),)
    category = f"{CATEGORY}/samplers"

    def run(self, sampler_name):
        return (SamplerChoice(sampler_name),)


class BasicScheduler(Node):
    """The model's sigmas for a named schedule; denoise < 1 keeps the last `steps` of a longer one."""

    inputs = (Input("model", "MODEL"), Combo("scheduler", choices=SCHEDULER_NAMES),
              Int("steps", default=20, min=1, max=10000), Float("denoise", default=1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("SIGMAS"),)
    category = f"{CATEGORY}/schedulers"

    def run(self, model, scheduler, steps, denoise):
        if denoise <= 0.0:
            return (torch.FloatTensor([]),)
        total = steps if denoise >= 1.0 else int(steps / denoise)
        return (schedules.build(_table(model), scheduler, total)[-(steps + 1):],)


def _sigma_range() -> tuple:
    return (Float("sigma_max", default=14.614642, min=0.0, max=5000.0, step=0.01),
            Float("sigma_min", default=0.0291675, min=0.0, max=5000.0, step=0.01))


class KarrasScheduler(Node):
    """Karras et al.'s schedule between two sigmas."""

    inputs = (Int("steps", default=20, min=1, max=10000), *_sigma_range(),
              Float("rho", default=7.0, min=0.0, max=100.0, step=0.01))
    outputs = (Output("SIGMAS"),)
    category = f"{CATEGORY}/schedulers"

    def run(self, steps, sigma_max, sigma_min, rho):
        return (schedules.karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    """Sigmas evenly spaced in log sigma."""

    inputs = (Int("steps", default=20, min=1, max=10000), *_sigma_range())
    outputs = (Output("SIGMAS"),)
    category = f"{CATEGORY}/schedulers"

    def run(self, steps, sigma_max, sigma_min):
        return (schedules.exponential(steps, sigma_min, sigma_max),)


class SDTurboScheduler(Node):
    """SD Turbo's timesteps 999, 899, ... (1 to 10 of them); denoise < 1 starts further down."""

    inputs = (Input("model", "MODEL"), Int("steps", default=1, min=1, max=10),
              Float("denoise", default=1.0, min=0, max=1.0, step=0.01))
    outputs = (Output("SIGMAS"),)
    category = f"{CATEGORY}/schedulers"

    def run(self, model, steps, denoise):
        start = 10 - int(10 * denoise)
        timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
        sigmas = _table(model).sigma(timesteps)
        return (torch.cat([sigmas, sigmas.new_zeros([1])]),)


class SplitSigmas(Node):
    """The sigmas up to `step` and from it on (both keep sigma `step`), to hand a run from one sampler to the next."""

    inputs = (Input("sigmas", "SIGMAS"), Int("step", default=0, min=0, max=10000))
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))
    category = f"{CATEGORY}/sigmas"

    def run(self, sigmas, step):
        return sigmas[:step + 1], sigmas[step:]


class RandomNoise(Node):
    """Starting noise from a seed (one tensor for the batch, as ComfyUI)."""

    inputs = (Int("noise_seed", default=0, min=0, max=MAX_SEED, control_after_generate=True),)
    outputs = (Output("NOISE"),)
    category = f"{CATEGORY}/noise"

    def run(self, noise_seed):
        return (NoiseSource(noise_seed),)


class DisableNoise(Node):
    """No starting noise: the latent already holds it (a previous sampler's leftover)."""

    outputs = (Output("NOISE"),)
    category = f"{CATEGORY}/noise"

    def run(self):
        return (NoiseSource(0, enabled=False),)


class CFGGuider(Node):
    """Classifier-free guidance between the positive and the negative conditioning."""

    inputs = (Input("model", "MODEL"), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Float("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01))
    outputs = (Output("GUIDER"),)
    category = f"{CATEGORY}/guiders"

    def run(self, model, positive, negative, cfg):
        return (Guider(model, positive, negative, cfg),)


class BasicGuider(Node):
    """The model's prediction for one conditioning, unguided (cfg 1)."""

    inputs = (Input("model", "MODEL"), Input("conditioning", "CONDITIONING"))
    outputs = (Output("GUIDER"),)
    category = f"{CATEGORY}/guiders"

    def run(self, model, conditioning):
        return (Guider(model, conditioning, [], 1.0),)


_OUTPUTS = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))


class SamplerCustom(Node):
    """Walk the given sigmas with the given sampler: the latent, and the last step's clean prediction."""

    inputs = (Input("model", "MODEL"), Boolean("add_noise", default=True),
              Int("noise_seed", default=0, min=0, max=MAX_SEED, control_after_generate=True),
              Float("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
              Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"), Input("sampler", "SAMPLER"),
              Input("sigmas", "SIGMAS"), Input("latent_image", "LATENT"))
    outputs = _OUTPUTS
    category = CATEGORY

    def run(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        return _sample(NoiseSource(noise_seed, add_noise), Guider(model, positive, negative, cfg), sampler, sigmas,
                       latent_image, self.ctx.progress)


class SamplerCustomAdvanced(Node):
    """SamplerCustom with its noise and guidance as separate nodes."""

    inputs = (Input("noise", "NOISE"), Input("guider", "GUIDER"), Input("sampler", "SAMPLER"),
              Input("sigmas", "SIGMAS"), Input("latent_image", "LATENT"))
    outputs = _OUTPUTS
    category = CATEGORY

    def run(self, noise, guider, sampler, sigmas, latent_image):
        return _sample(noise, guider, sampler, sigmas, latent_image, self.ctx.progress)


NODES = {"SamplerCustom": SamplerCustom, "SamplerCustomAdvanced": SamplerCustomAdvanced,
         "KSamplerSelect": KSamplerSelect, "BasicScheduler": BasicScheduler, "KarrasScheduler": KarrasScheduler,
         "ExponentialScheduler": ExponentialScheduler, "SDTurboScheduler": SDTurboScheduler,
         "SplitSigmas": SplitSigmas, "RandomNoise": RandomNoise, "DisableNoise": DisableNoise,
         "CFGGuider": CFGGuider, "BasicGuider": BasicGuider}
