"""The denoising loop: diffusers UNet and schedulers, with each step of a generation named.

    clean latent --add noise--> x --(UNet with CFG, ControlNet, inpaint/depth channels)--> scheduler step --> x ...

LATENT["samples"] is in UNet space (VAE latent times the VAE's scaling factor); EmptyLatentImage gives
zeros. A latent handed from one sampler to the next with leftover noise is x0 + sigma * noise
(k-diffusion's form, as ComfyUI's), whichever scheduler made it; schedulers that keep the
variance-preserving form sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * noise are converted at the edges.

What the loop reads from each Cond besides `embeds` and `controls`:
  pooled                     SDXL pooled text embedding (required for SDXL)
  extra["width"/"height"], ["crop_w"/"crop_h"], ["target_width"/"target_height"]
                             SDXL size conditioning (default: the image size, no crop)
  extra["aesthetic_score"]   SDXL refiner (default 6.0 positive, 2.5 negative, as ComfyUI)
  extra["depth"]             depth map for 5-channel depth UNets, [B,H,W] or IMAGE [B,H,W,C]
  extra["prompt_schedule"]   (prompt, text) of A1111 prompt editing: the Cond takes part only in the
                             steps where the prompt's schedule selects `text` (text_encode.encode)
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..formats import prompt_syntax
from . import control, lora, noise, schedulers
from .latent_preview import preview_image
from .model_types import SDXL_REFINER, Cond, ControlHint, DiffusionModel

Progress = Callable[[int, int, object], None]


def sample(model: DiffusionModel, positive: list[Cond], negative: list[Cond], latent: dict, seed: int, steps: int,
           cfg: float, sampler_name: str, scheduler: str, denoise: float = 1.0, start_step: int | None = None,
           end_step: int | None = None, add_noise: bool = True, return_with_leftover_noise: bool = False,
           progress: Progress | None = None) -> dict:
    """Denoise `latent` and return a new LATENT (the input's keys, new "samples").

    `denoise` < 1 runs only the last int(steps * denoise) steps, starting from the input re-noised to
    that point (img2img). `start_step`/`end_step` cut the schedule further (KSamplerAdvanced); unless
    `return_with_leftover_noise`, a run that stops early finishes at the clean prediction.
    `progress(step, total, preview)` is called after each step, with a small PIL preview."""
    unet = model.unet
    device = unet.device
    clean = latent["samples"].to(device, torch.float32)
    batch = clean.shape[0]
    first, last = _step_range(steps, denoise, start_step, end_step)
    if first >= last:
        return dict(latent)  # no steps to run: denoise 0, or an empty step range

    # 1. schedule: the timesteps of steps first .. last-1 (second-order samplers evaluate twice a step)
    sched = schedulers.build(model.scheduler_config, sampler_name, scheduler)
    sched.set_timesteps(steps, device=device)
    order = sched.order
    begin = first * order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(begin)
    leftover = last < steps and return_with_leftover_noise
    finish_clean = last < steps and not leftover  # ComfyUI's force_full_denoise: end on the clean prediction
    end = (last - 1) * order + 1 if finish_clean else last * order  # schedule index after the last evaluation
    timesteps = sched.timesteps[begin:end]

    # 2. noise, one generator per image; the same generators feed ancestral/SDE step noise
    gens = noise.generators(seed, batch, latent.get("batch_index"))
    eps = noise.gaussian(gens, clean.shape[1:], device)
    step_kwargs = {"generator": gens} if "generator" in inspect.signature(sched.step).parameters else {}

    # 3. everything the UNet sees besides x
    mask = _latent_mask(latent.get("noise_mask"), clean.shape, device)
    guide = _guide(model, positive, negative, cfg, clean, mask)
    hint_images = control.hint_images([h for row in guide.hints for h in row], batch,
                                      clean.shape[2] * 8, clean.shape[3] * 8, device)

    # 4. the starting sample
    x = _starting_sample(sched, clean, eps, begin, timesteps[:1].repeat(batch), add_noise)

    # 5. the loop, with the model's LoRA weights (if any) in place
    with torch.no_grad(), lora.applied(model):
        for i, t in enumerate(timesteps):
            index = begin + i
            step = index // order
            model_input = sched.scale_model_input(x, t)
            prediction = _guided_prediction(unet, model_input, t, guide, cfg, hint_images, step, steps)
            out = sched.step(prediction, t, x, **step_kwargs)
            x0 = _predicted_x0(sched, out, prediction, x, index)
            final = i == len(timesteps) - 1
            x = x0 if final and finish_clean else out.prev_sample
            if (index + 1) % order and not final:
                continue  # first half of a second-order step
            if mask is not None:
                x = _keep_unmasked(sched, x, clean, eps, mask, index + 1, at_end=final and not leftover)
            if progress is not None:
                progress(step - first + 1, last - first, preview_image(x0[0], model.family))

    # 6. hand over leftover noise in sigma form
    if leftover:
        x = _from_scheduler_form(sched, x, end)
    return {**latent, "samples": x}


# -- the schedule ------------------------------------------------------------------------------------------

def _step_range(steps: int, denoise: float, start_step: int | None, end_step: int | None) -> tuple[int, int]:
    """Steps [first, last) of a `steps`-step schedule to run."""
    first = steps - min(int(steps * denoise), steps)  # diffusers' img2img get_timesteps
    if start_step is not None:
        first = max(first, start_step)
    last = steps if end_step is None else min(end_step, steps)
    return first, last


def _noise_level(sched, index: int) -> float:
    """k-diffusion sigma of the sample at schedule position `index`."""
    if hasattr(sched, "sigmas"):
        return float(sched.sigmas[index])
    alpha_bar = float(sched.alphas_cumprod[int(sched.timesteps[index])])
    return math.sqrt((1 - alpha_bar) / alpha_bar)


def _into_scheduler_form(sched, x: torch.Tensor, index: int) -> torch.Tensor:
    """x0 + sigma * noise -> the form this scheduler keeps its samples in."""
    if schedulers.in_sigma_space(sched):
        return x
    return x / math.sqrt(1 + _noise_level(sched, index) ** 2)


def _from_scheduler_form(sched, x: torch.Tensor, index: int) -> torch.Tensor:
    """This scheduler's form -> x0 + sigma * noise."""
    if schedulers.in_sigma_space(sched):
        return x
    return x * math.sqrt(1 + _noise_level(sched, index) ** 2)


def _starting_sample(sched, clean, eps, begin: int, first_t, add_noise: bool) -> torch.Tensor:
    if not add_noise:  # the latent already holds the noise of this point (a previous sampler's leftover)
        return _into_scheduler_form(sched, clean, begin)
    if begin == 0:  # full denoise: noise at the scheduler's starting scale, as the diffusers pipelines
        return _into_scheduler_form(sched, clean, 0) + eps * sched.init_noise_sigma
    return sched.add_noise(clean, eps, first_t)  # img2img: re-noise to the first timestep


def _predicted_x0(sched, out, prediction, x, index: int) -> torch.Tensor:
    """The clean latent the model predicts at this evaluation. Most schedulers report it; for the
    multistep ones that don't (DPM-Solver, UniPC, DEIS: all variance-preserving), it is derived here."""
    reported = getattr(out, "pred_original_sample", None)
    if reported is None:
        reported = getattr(out, "denoised", None)  # LCM
    if reported is not None:
        return reported
    sigma = _noise_level(sched, index)
    alpha, sigma_vp = 1 / math.sqrt(1 + sigma ** 2), sigma / math.sqrt(1 + sigma ** 2)
    if sched.config.prediction_type == "v_prediction":
        return alpha * x - sigma_vp * prediction
    if sched.config.prediction_type == "sample":
        return prediction
    return (x - sigma_vp * prediction) / alpha


# -- inpainting with a noise mask -----------------------------------------------------------------------

def _latent_mask(noise_mask, shape, device) -> torch.Tensor | None:
    """LATENT noise_mask (any of [H,W], [B,H,W], [B,1,H,W], pixel or latent size) as [B,1,h,w] at latent size."""
    if noise_mask is None:
        return None
    mask = noise_mask.to(device, torch.float32).reshape(-1, 1, *noise_mask.shape[-2:])
    mask = F.interpolate(mask, size=shape[-2:], mode="bilinear")
    return _to_batch(mask, shape[0])


def _keep_unmasked(sched, x, clean, eps, mask, index: int, at_end: bool) -> torch.Tensor:
    """Put the original latent, noised to where x is now (schedule position `index`), back outside the
    mask (1 = denoise here); at the end it is the original itself, so that region comes out unchanged."""
    kept = clean if at_end else sched.add_noise(clean, eps, sched.timesteps[index:index + 1].repeat(len(x)))
    return mask * x + (1 - mask) * kept


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

    def at_step(self, step: int, steps: int) -> "_Guide":
        """The rows prompt editing selects at this step (all rows when no prompt is scheduled)."""
        rows = [r for r, s in enumerate(self.schedules)
                if s is None or prompt_syntax.text_at(s[0], steps, step) == s[1]]
        if len(rows) == len(self.schedules):
            return self
        batch = self.embeds.shape[0] // len(self.schedules)
        index = torch.cat([torch.arange(r * batch, (r + 1) * batch) for r in rows]).to(self.embeds.device)
        return _Guide(self.embeds[index], {k: v[index] for k, v in self.added.items()} if self.added else None,
                      [self.hints[r] for r in rows], sum(r < self.negatives for r in rows), self.concat,
                      [self.schedules[r] for r in rows])


def _guide(model: DiffusionModel, positive: list[Cond], negative: list[Cond], cfg: float, clean, mask) -> _Guide:
    if not positive:
        raise ValueError("positive conditioning is empty")
    if cfg != 1.0 and not negative:
        raise ValueError("negative conditioning is empty (needed when cfg is not 1)")
    negative = list(negative) if cfg != 1.0 else []
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

    return _Guide(embeds.to(device, dtype), added, [c.controls for c in conds], len(negative),
                  _extra_channels(model, positive, clean, mask), [c.extra.get(prompt_syntax.SCHEDULE_KEY) for c in conds])


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


def _guided_prediction(unet, model_input, t, guide: _Guide, cfg: float, hint_images, step: int,
                       steps: int) -> torch.Tensor:
    """One batched UNet call over every row active at this step, then classifier-free guidance:
    uncond + cfg * (cond - uncond), each the mean over its rows."""
    guide = guide.at_step(step, steps)
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
        return cond
    uncond = torch.stack(chunks[:guide.negatives]).mean(0)
    return uncond + cfg * (cond - uncond)


def _to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (or cut) along dim 0 to `batch` entries, as ComfyUI's repeat_to_batch_size."""
    if tensor.shape[0] == batch:
        return tensor
    return tensor[torch.arange(batch) % tensor.shape[0]]
