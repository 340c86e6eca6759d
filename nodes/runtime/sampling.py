"""The denoising loop: ComfyUI's KSampler on diffusers components, with each step of a generation named.

    schedule (sigmas) --> starting sample x = latent + noise * sigma_0 --> sampler (k_samplers.py), which
    calls the denoiser: UNet with CFG, ControlNet, inpaint/depth channels -> the predicted clean latent

LATENT["samples"] is in UNet space (VAE latent times the VAE's scaling factor); EmptyLatentImage gives
zeros. Samples are x0 + sigma * noise (k-diffusion's form, as ComfyUI's), so a latent handed from one
sampler to the next with leftover noise needs no conversion.

The noise rule (noise.py) decides how the seed becomes noise and how img2img counts its steps:
  "comfyui", "comfyui_nv"
             denoise d runs `steps` steps: the last steps of a schedule built for int(steps / d) steps
  "a1111", "a1111_nv"
             denoise d runs int(min(d, 0.999) * steps) + 1 steps: the end of the `steps`-step schedule

What the loop reads from each Cond besides `embeds` and `controls`:
  pooled                     SDXL pooled text embedding (required for SDXL)
  extra["width"/"height"], ["crop_w"/"crop_h"], ["target_width"/"target_height"]
                             SDXL size conditioning (default: the image size, no crop)
  extra["aesthetic_score"]   SDXL refiner (default 6.0 positive, 2.5 negative, as ComfyUI)
  extra["depth"]             depth map for 5-channel depth UNets, [B,H,W] or IMAGE [B,H,W,C]
  extra["prompt_schedule"]   (prompt, text) of A1111 prompt editing: the Cond takes part only in the
                             steps where the prompt's schedule selects `text` (text_encode.encode)
  extra["area"/"mask"/"strength"/"start_percent"/"end_percent"...]
                             where and when the Cond acts (cond_areas.py, ComfyUI's ConditioningSet* nodes)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..formats import prompt_syntax
from ..formats.sampler_names import SAMPLER_NAMES, check_sampler
from . import cond_areas, control, diffusers_solvers, k_samplers, lora, memory_manager, noise, unet_compile
from . import sigmas as sigma_schedules
from .latent_preview import preview_image
from .model_types import SDXL_REFINER, Cond, ControlHint, DiffusionModel

Progress = Callable[[int, int, object], None]

# ComfyUI builds these samplers' schedules one step longer and drops the next-to-last sigma
DISCARD_PENULTIMATE_SIGMA = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}


_SAMPLERS = {**k_samplers.SAMPLERS, **diffusers_solvers.SAMPLERS}
assert set(_SAMPLERS) == set(SAMPLER_NAMES), "one name table"


def sampler_spec(sampler_name: str) -> k_samplers.Sampler:
    check_sampler(sampler_name)
    return _SAMPLERS[sampler_name]


def sample(model: DiffusionModel, positive: list[Cond], negative: list[Cond], latent: dict, seed: int, steps: int,
           cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0, start_step: int | None = None,
           end_step: int | None = None, add_noise: bool = True, return_with_leftover_noise: bool = False,
           progress: Progress | None = None, noise_rule: str = "comfyui", seed_delta: int = 0) -> dict:
    """Denoise `latent` and return a new LATENT (the input's keys, new "samples").

    `denoise` < 1 keeps part of the input (img2img), counted by `noise_rule`; `seed_delta` is A1111's eta
    noise seed delta (noise.py). `start_step`/`end_step`
    cut the schedule further (KSamplerAdvanced); unless `return_with_leftover_noise`, a run that stops
    early steps down to sigma 0. `progress(step, total, preview)` is called after each step, with a
    small PIL preview."""
    table = sigma_schedules.DiscreteSchedule(model.scheduler_config)
    sigmas, first, total = run_sigmas(table, sampler_name, scheduler, steps, denoise, noise_rule)
    if end_step is not None and end_step < len(sigmas) - 1:
        sigmas = sigmas[:end_step + 1].clone()
        if not return_with_leftover_noise:
            sigmas[-1] = 0  # ComfyUI's force_full_denoise
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return dict(latent)  # an empty step range
        sigmas, first = sigmas[start_step:], first + start_step
    # A1111 runs a refiner in the same loop: a part that adds no noise continues the step noise of the
    # part before it, which drew once per step
    continued = start_step if start_step and not add_noise and noise_rule in noise.A1111_RULES else 0
    return sample_sigmas(model, positive, negative, latent, seed, sigmas, cfg, sampler_name, add_noise=add_noise,
                         progress=progress, noise_rule=noise_rule, first_step=first, total_steps=total,
                         seed_delta=seed_delta, continued_steps=continued)[0]


def sample_sigmas(model: DiffusionModel, positive: list[Cond], negative: list[Cond] | None, latent: dict, seed: int,
                  sigmas: torch.Tensor, cfg: float, sampler_name: str, add_noise: bool = True,
                  progress: Progress | None = None, noise_rule: str = "comfyui", first_step: int = 0,
                  total_steps: int | None = None, seed_delta: int = 0, continued_steps: int = 0) -> tuple[dict, dict]:
    """Walk `sigmas` (ComfyUI's SIGMAS: descending, usually ending in 0) from `latent`; (the LATENT, the
    LATENT of the last step's clean prediction). `first_step` of `total_steps` is where the sigmas start in
    the whole schedule (for prompt editing and ControlNet step ranges)."""
    if len(sigmas) <= 1:
        return dict(latent), dict(latent)  # no steps to run: denoise 0
    spec = sampler_spec(sampler_name)
    hints = [h for c in [*positive, *(negative or [])] for h in c.controls]
    rows = len(positive) + len(negative or [])
    activation = memory_manager.unet_activation_bytes(model.unet, tuple(latent["samples"].shape), rows)
    with memory_manager.using([model.unet, *(h.control_net.model for h in hints)], activation) as device:
        return _sample_on(device, spec, model, positive, negative, latent, seed, sigmas, cfg, sampler_name,
                          add_noise, progress, noise_rule, first_step, total_steps, seed_delta, continued_steps)


def _sample_on(device, spec, model, positive, negative, latent, seed, sigmas, cfg, sampler_name, add_noise,
               progress, noise_rule, first_step, total_steps, seed_delta, continued_steps) -> tuple[dict, dict]:
    """sample_sigmas' steps, with the models on `device` (the memory manager's)."""
    clean = latent["samples"].to(device, torch.float32)
    sigmas = sigmas.detach().float().cpu()
    total = total_steps if total_steps is not None else len(sigmas) - 1
    table = sigma_schedules.DiscreteSchedule(model.scheduler_config)

    # 1. noise: the starting noise and the sampler's step noise, drawn on the CPU by the rule
    seeded = noise.SeededNoise(noise_rule, seed, clean.shape, latent.get("batch_index"), seed_delta,
                               latent.get("variation") if add_noise else None)
    eps = seeded.initial.to(device) if add_noise else torch.zeros_like(clean)
    step_noise = seeded.step_noise(spec.noise, sigmas, device)
    for _ in range(continued_steps if spec.noise == "randn" else 0):  # (a Brownian tree needs no skipping)
        step_noise(0.0, 0.0)

    # 2. everything the UNet sees besides x
    mask = _latent_mask(latent.get("noise_mask"), clean.shape, device)
    negative = control.with_uncond_hints(positive, negative or [])  # ControlNetApply reaches the negative too
    guide = _guide(model, positive, negative, cfg, clean, mask, keep_negative=spec.cfg_pp,
                   percent_to_sigma=table.percent_to_sigma)
    hint_images = control.hint_images([h for row in guide.hints for h in row], clean.shape[0],
                                      clean.shape[2] * 8, clean.shape[3] * 8, device)
    # outside the mask the input is put back at each call, noised with this (ddim draws its own, as ComfyUI)
    mask_noise = eps if sampler_name != "ddim" else torch.randn(
        clean.shape, generator=torch.Generator().manual_seed((seed + 1) % 2 ** 64)).to(device)
    denoiser = Denoiser(model, guide, cfg, hint_images, table, sigmas, first_step, total, mask, clean, mask_noise,
                        device, interpolate_timesteps=noise_rule not in noise.COMFYUI_RULES)

    # 3. the starting sample: ComfyUI scales full-denoise noise by sqrt(1 + sigma^2), A1111 by sigma
    s0 = float(sigmas[0])
    full = noise_rule in noise.COMFYUI_RULES and (math.isclose(s0, table.sigma_max, rel_tol=1e-5) or s0 > table.sigma_max)
    x = clean + eps * (math.sqrt(1.0 + s0 ** 2) if full else s0)

    # 4. the sampler, with the model's LoRA weights (if any) in place
    last = {}

    def callback(i: int, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised
        if progress is not None:  # (Restart walks back up: its extra steps report the last one again)
            steps_run = len(sigmas) - 1
            progress(min(i + 1, steps_run), steps_run, preview_image(denoised[0], model.family))

    with torch.no_grad(), lora.applied(model):
        x = spec.run(denoiser, x, sigmas, step_noise, callback)
    if mask is not None and sigmas[-1] == 0:
        x = x * mask + clean * (1 - mask)  # the unmasked region exactly as it came (ComfyUI: within rounding)
    return {**latent, "samples": x}, {**latent, "samples": last.get("denoised", x)}


# -- the schedule ------------------------------------------------------------------------------------------

def schedule(table: sigma_schedules.DiscreteSchedule, sampler_name: str, scheduler: str, steps: int) -> torch.Tensor:
    """ComfyUI's KSampler.calculate_sigmas: steps + 1 sigmas for this sampler and scheduler."""
    if sampler_name in DISCARD_PENULTIMATE_SIGMA:
        full = sigma_schedules.build(table, scheduler, steps + 1)
        return torch.cat([full[:-2], full[-1:]])
    return sigma_schedules.build(table, scheduler, steps)


def run_sigmas(table, sampler_name: str, scheduler: str, steps: int, denoise: float,
               rule: str) -> tuple[torch.Tensor, int, int]:
    """(the sigmas to walk, the step of the first of them, the steps of the whole schedule)."""
    if rule not in noise.NOISE_RULES:
        raise ValueError(f"unknown noise_rule {rule!r}; known: {', '.join(noise.NOISE_RULES)}")
    if denoise <= 0.0:
        return torch.zeros(0), 0, steps
    if rule in noise.COMFYUI_RULES:
        if denoise > 0.9999:
            return schedule(table, sampler_name, scheduler, steps), 0, steps
        longer = int(steps / denoise)
        return schedule(table, sampler_name, scheduler, longer)[-(steps + 1):], longer - steps, longer
    encode_steps = int(min(denoise, 0.999) * steps)  # A1111's t_enc
    first = steps - encode_steps - 1
    return schedule(table, sampler_name, scheduler, steps)[first:], first, steps


# -- the denoiser: x at sigma -> the predicted clean latent ---------------------------------------------

class Denoiser:
    """ComfyUI's model wrapper: scales x for the UNet, calls it at the trained timestep nearest to sigma
    (with `interpolate_timesteps`, A1111's: between the trained ones), applies classifier-free guidance and turns the prediction into a clean latent. With a noise mask
    the input's unmasked part is put back around each call (ComfyUI's KSamplerX0Inpaint). `uncond` is
    the unguided clean latent of the last call (for the CFG++ samplers)."""

    def __init__(self, model: DiffusionModel, guide: "_Guide", cfg: float, hint_images, table, sigmas, first: int,
                 total: int, mask, clean, mask_noise, device=None, interpolate_timesteps: bool = False):
        self.timestep = table.interpolated_timestep if interpolate_timesteps else table.timestep
        self.model, self.guide, self.cfg, self.hint_images, self.table = model, guide, cfg, hint_images, table
        self.device = device  # where the UNet runs (None: where x is)
        self.run_sigmas, self.first, self.total = sigmas, first, total
        self.mask, self.clean, self.mask_noise = mask, clean, mask_noise
        self.uncond: torch.Tensor | None = None

    def step_of(self, sigma) -> int:
        """The schedule step a call at `sigma` belongs to (a sampler's in-between calls: the step they start)."""
        later = int((self.run_sigmas[:-1] >= float(sigma) * (1 - 1e-5)).sum()) - 1
        return self.first + max(later, 0)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        s = float(sigma)
        if self.mask is not None:
            x = x * self.mask + (self.clean + self.mask_noise * s) * (1 - self.mask)
        unet = unet_compile.for_sampling(self.model.unet)  # the module itself unless --compile
        t = self.timestep(sigma).to(self.device if self.device is not None else x.device)
        model_input = x / math.sqrt(s * s + 1.0)
        step = self.step_of(s)
        guide = self.guide.at_step(step, self.total, s)
        cond, uncond = _predictions(unet, model_input, t, guide, self.hint_images, step, self.total)
        to_clean = self._to_clean
        denoised = to_clean(x, cond, s)
        if uncond is not None:
            self.uncond = to_clean(x, uncond, s)
            denoised = self.uncond + self.cfg * (denoised - self.uncond)
        else:
            self.uncond = denoised
        if self.mask is not None:
            denoised = denoised * self.mask + self.clean * (1 - self.mask)
            self.uncond = self.uncond * self.mask + self.clean * (1 - self.mask)
        return denoised

    def _to_clean(self, x: torch.Tensor, prediction: torch.Tensor, s: float) -> torch.Tensor:
        kind = self.table.prediction_type
        if kind == "v_prediction":
            return x / (s * s + 1.0) - prediction * s / math.sqrt(s * s + 1.0)
        if kind == "sample":
            return prediction
        return x - prediction * s


# -- inpainting with a noise mask -----------------------------------------------------------------------

def _latent_mask(noise_mask, shape, device) -> torch.Tensor | None:
    """LATENT noise_mask (any of [H,W], [B,H,W], [B,1,H,W], pixel or latent size) as [B,1,h,w] at latent size."""
    if noise_mask is None:
        return None
    mask = noise_mask.to(device, torch.float32).reshape(-1, 1, *noise_mask.shape[-2:])
    mask = F.interpolate(mask, size=shape[-2:], mode="bilinear")
    return _to_batch(mask, shape[0])


# -- what the UNet sees ---------------------------------------------------------------------------------

@dataclass
class _Guide:
    """The UNet's inputs besides x, fixed for a run. The UNet batch is rows x images: one row per Cond,
    negatives first (none when cfg is 1)."""

    embeds: torch.Tensor  # [rows * B, tokens, D]
    added: dict | None  # SDXL text_embeds and time_ids, [rows * B, ...]
    hints: list[list[ControlHint]]  # per row
    negatives: int  # leading rows that are negative
    concat: torch.Tensor | None  # extra input channels [B, C, h, w]: inpaint mask + masked image, or depth
    schedules: list[tuple[str, str] | None]  # per row: (prompt, text) of prompt editing, or always on
    regions: list[cond_areas.Region | None]  # per row: crop and weight, or the whole latent at weight 1
    ranges: list[tuple[float, float] | None]  # per row: (highest, lowest) sigma it acts at, or always on
    guided: bool = False  # the run has negative rows (some may be inactive at a step)

    def _active(self, r: int, step: int, steps: int, sigma: float | None) -> bool:
        s, span = self.schedules[r], self.ranges[r]
        if s is not None and prompt_syntax.text_at(s[0], steps, step) != s[1]:
            return False
        return span is None or sigma is None or span[1] <= sigma <= span[0]

    def at_step(self, step: int, steps: int, sigma: float | None = None) -> "_Guide":
        """The rows active at this step: prompt editing's selection and timestep ranges."""
        rows = [r for r in range(len(self.schedules)) if self._active(r, step, steps, sigma)]
        if len(rows) == len(self.schedules):
            return self
        batch = self.embeds.shape[0] // len(self.schedules)
        index = torch.cat([torch.arange(r * batch, (r + 1) * batch) for r in rows] or [torch.zeros(0, dtype=torch.long)])
        index = index.to(self.embeds.device)
        return _Guide(self.embeds[index], {k: v[index] for k, v in self.added.items()} if self.added else None,
                      [self.hints[r] for r in rows], sum(r < self.negatives for r in rows), self.concat,
                      [self.schedules[r] for r in rows], [self.regions[r] for r in rows],
                      [self.ranges[r] for r in rows], self.guided)


def _guide(model: DiffusionModel, positive: list[Cond], negative: list[Cond], cfg: float, clean, mask,
           keep_negative: bool = False, percent_to_sigma=None) -> _Guide:
    """At cfg 1 the negative is left out (ComfyUI's shortcut), unless the sampler reads it (CFG++)."""
    if not positive:
        raise ValueError("positive conditioning is empty")
    if cfg != 1.0 and not negative:
        raise ValueError("negative conditioning is empty (needed when cfg is not 1)")
    negative = list(negative) if cfg != 1.0 or keep_negative else []
    conds = negative + list(positive)
    batch, _, height, width = clean.shape
    unet, device, dtype = model.unet, clean.device, model.unet.dtype

    expected = unet.config.cross_attention_dim
    for cond in conds:
        if cond.embeds.shape[-1] != expected:
            raise ValueError(f"conditioning has {cond.embeds.shape[-1]}-wide text embeddings, this model takes "
                             f"{expected}: encode the prompt with this model's CLIP")
    # prompts of different lengths: repeating the tokens of a shorter one leaves attention unchanged
    tokens = math.lcm(*(c.embeds.shape[1] for c in conds))
    embeds = torch.cat([_to_batch(c.embeds.repeat(1, tokens // c.embeds.shape[1], 1), batch) for c in conds])

    added = None
    if model.family.is_xl:
        if any(c.pooled is None for c in conds):
            raise ValueError("SDXL conditioning needs a pooled text embedding: encode with an SDXL CLIP")
        time_ids = [_time_ids(c, model.family.name, height * 8, width * 8, i < len(negative))
                    for i, c in enumerate(conds)]
        added = {"text_embeds": torch.cat([_to_batch(c.pooled, batch) for c in conds]).to(device, dtype),
                 "time_ids": torch.tensor(time_ids, dtype=dtype, device=device).repeat_interleave(batch, 0)}

    regions = [None if cond_areas.is_plain(c) else cond_areas.region(c, batch, height, width, device) for c in conds]
    if percent_to_sigma is None:
        percent_to_sigma = sigma_schedules.DiscreteSchedule(model.scheduler_config).percent_to_sigma
    return _Guide(embeds.to(device, dtype), added, [c.controls for c in conds], len(negative),
                  _extra_channels(model, positive, clean, mask), [c.extra.get(prompt_syntax.SCHEDULE_KEY) for c in conds],
                  regions, [cond_areas.sigma_range(c, percent_to_sigma) for c in conds], bool(negative))


def _time_ids(cond: Cond, family: str, height: int, width: int, negative: bool) -> list[float]:
    """SDXL micro-conditioning: original size, crop, then target size (base) or aesthetic score (refiner)."""
    e = cond.extra
    ids = [e.get("height", height), e.get("width", width), e.get("crop_h", 0), e.get("crop_w", 0)]
    if family == SDXL_REFINER:
        return ids + [e.get("aesthetic_score", 2.5 if negative else 6.0)]
    return ids + [e.get("target_height", height), e.get("target_width", width)]


def _extra_channels(model: DiffusionModel, positive: list[Cond], clean, mask) -> torch.Tensor | None:
    """Channels concatenated to x for inpainting (mask, masked-image latents) and depth (depth map) UNets.

    An inpaint UNet takes the LATENT itself as the masked image (VAEEncodeForInpaint greys the masked
    pixels before encoding) and its noise_mask, rounded, as the mask; without one it repaints everything."""
    batch, _, height, width = clean.shape
    if model.family.kind == "inpaint":
        inpaint_mask = torch.ones_like(clean[:, :1]) if mask is None else mask.round()
        return torch.cat([inpaint_mask, clean], dim=1)
    if model.family.kind == "depth":
        depth = next((c.extra["depth"] for c in positive if "depth" in c.extra), None)
        if depth is None:
            raise ValueError("this depth model needs a depth map in the positive conditioning")
        depth = depth.to(clean.device, torch.float32)
        depth = depth.mean(-1) if depth.ndim == 4 else depth  # an IMAGE [B,H,W,C]
        depth = F.interpolate(depth.reshape(-1, 1, *depth.shape[-2:]), size=(height, width), mode="bicubic")
        low = depth.amin(dim=(1, 2, 3), keepdim=True)
        high = depth.amax(dim=(1, 2, 3), keepdim=True)
        depth = 2.0 * (depth - low) / (high - low).clamp_min(1e-8) - 1.0  # each map to -1..1, as diffusers
        return _to_batch(depth, batch)
    return None


def _predictions(unet, model_input, t, guide: _Guide, hint_images, step: int,
                 steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The UNet over every row of `guide` (the rows active at this step): (cond, uncond) predictions, each
    the mean over its rows, weighted per cell when a row has an area or mask; uncond is None when no
    negative row takes part. A side with no row at this step predicts zero noise (as ComfyUI)."""
    a_side_is_empty = guide.negatives == len(guide.hints) or guide.guided and not guide.negatives
    if a_side_is_empty or any(r is not None for r in guide.regions):
        return _weighted_predictions(unet, model_input, t, guide, hint_images, step, steps)
    rows = len(guide.hints)
    x = model_input.repeat(rows, 1, 1, 1)
    if guide.concat is not None:
        x = torch.cat([x, guide.concat.repeat(rows, 1, 1, 1)], dim=1)
    residuals = control.residuals(guide.hints, hint_images, model_input, t, guide.embeds, guide.added, step, steps)
    out = unet(x.to(unet.dtype), t, encoder_hidden_states=guide.embeds, added_cond_kwargs=guide.added,
               **residuals).sample.float()
    chunks = out.chunk(rows)
    cond = torch.stack(chunks[guide.negatives:]).mean(0)
    if not guide.negatives:
        return cond, None
    return cond, torch.stack(chunks[:guide.negatives]).mean(0)


def _weighted_predictions(unet, model_input, t, guide: _Guide, hint_images, step: int,
                          steps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ComfyUI's calc_cond_batch: rows sharing a crop run as one UNet batch on that crop of the input;
    each side is the sum of its rows' predictions times their weights over the sum of the weights."""
    batch, _, height, width = model_input.shape
    full = cond_areas.Region((height, width, 0, 0), torch.ones(batch, 1, height, width, device=model_input.device))
    regions = [r or full for r in guide.regions]
    sums = [torch.zeros_like(model_input) for _ in range(2)]  # negative, positive
    counts = [torch.full_like(model_input, 1e-37) for _ in range(2)]
    for crop in dict.fromkeys(r.crop for r in regions):
        rows = [i for i, r in enumerate(regions) if r.crop == crop]
        h, w, y, x = crop
        part = model_input[:, :, y:y + h, x:x + w]
        index = torch.cat([torch.arange(r * batch, (r + 1) * batch) for r in rows]).to(guide.embeds.device)
        embeds = guide.embeds[index]
        added = {k: v[index] for k, v in guide.added.items()} if guide.added else None
        sample_in = part.repeat(len(rows), 1, 1, 1)
        if guide.concat is not None:
            concat = guide.concat[:, :, y:y + h, x:x + w]
            sample_in = torch.cat([sample_in, concat.repeat(len(rows), 1, 1, 1)], dim=1)
        images = {k: v[:, :, y * 8:(y + h) * 8, x * 8:(x + w) * 8] for k, v in hint_images.items()}
        residuals = control.residuals([guide.hints[r] for r in rows], images, part, t, embeds, added, step, steps)
        out = unet(sample_in.to(unet.dtype), t, encoder_hidden_states=embeds, added_cond_kwargs=added,
                   **residuals).sample.float()
        for r, chunk in zip(rows, out.chunk(len(rows))):
            side = 0 if r < guide.negatives else 1
            mult = regions[r].mult
            sums[side][:, :, y:y + h, x:x + w] += chunk * mult
            counts[side][:, :, y:y + h, x:x + w] += mult
    cond = sums[1] / counts[1]
    return cond, (sums[0] / counts[0] if guide.guided else None)


def _to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (or cut) along dim 0 to `batch` entries, as ComfyUI's repeat_to_batch_size."""
    if tensor.shape[0] == batch:
        return tensor
    return tensor[torch.arange(batch) % tensor.shape[0]]
