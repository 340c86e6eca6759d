"""ControlNet hints: attached to conditioning by a node, turned into UNet residuals while sampling."""
from __future__ import annotations

import dataclasses

import torch

from .images import scale_image
from .model_types import Cond, ControlHint, ControlNet


def apply(positive: list[Cond], negative: list[Cond], control_net: ControlNet, image: torch.Tensor,
          strength: float, start_percent: float = 0.0, end_percent: float = 1.0) -> tuple[list[Cond], list[Cond]]:
    """ComfyUI's ControlNetApplyAdvanced: the same hint added to every positive and negative Cond, on top
    of any hints they already carry. Strength 0 leaves the conditioning as it was."""
    if strength == 0:
        return positive, negative
    hint = ControlHint(control_net, image, strength, start_percent, end_percent)
    with_hint = lambda conds: [dataclasses.replace(c, controls=[*c.controls, hint]) for c in conds]  # noqa: E731
    return with_hint(positive), with_hint(negative)


def apply_to_one(conditioning: list[Cond], control_net: ControlNet, image: torch.Tensor,
                 strength: float) -> list[Cond]:
    """ComfyUI's ControlNetApply (one conditioning, whole schedule): the hint goes on every Cond and is
    flagged to reach the negative conditioning too (see `with_uncond_hints`)."""
    if strength == 0:
        return conditioning
    hint = ControlHint(control_net, image, strength, apply_to_uncond=True)
    return [dataclasses.replace(c, controls=[*c.controls, hint]) for c in conditioning]


def with_uncond_hints(positive: list[Cond], negative: list[Cond]) -> list[Cond]:
    """The negative conditioning with the hints ControlNetApply put on the positive one, as ComfyUI's
    sampler fills them in: only when no negative Cond has hints of its own, the hints of the i-th
    flagged positive Cond go to negative Cond i (cycling; with more flagged positives than negatives
    the later ones win, as in ComfyUI)."""
    if not negative or any(c.controls for c in negative):
        return negative
    flagged = [c.controls for c in positive if any(h.apply_to_uncond for h in c.controls)]
    out = list(negative)
    for index, controls in enumerate(flagged):
        slot = index % len(negative)
        out[slot] = dataclasses.replace(negative[slot], controls=list(controls))
    return out


def hint_images(hints: list[ControlHint], batch: int, height: int, width: int, device) -> dict[int, torch.Tensor]:
    """Each hint's image as ControlNet input [batch, 3, height, width] in 0..1, keyed by id(hint): center
    cropped to the latent's aspect ratio and resized as ComfyUI does; image i of the batch gets control
    image i (cycling through a shorter batch)."""
    images = {}
    for hint in hints:
        if id(hint) in images:
            continue
        pixels = scale_image(hint.image[..., :3].float(), width, height, "nearest-exact", "center")
        pixels = pixels[torch.arange(batch) % pixels.shape[0]].movedim(-1, 1)
        images[id(hint)] = pixels.to(device=device, dtype=hint.control_net.model.dtype)
    return images


def is_active(hint: ControlHint, step: int, steps: int) -> bool:
    """Whether a hint applies at `step` of a `steps`-step schedule (diffusers' control_guidance_start/end)."""
    return hint.strength != 0 and hint.start_percent <= step / steps and (step + 1) / steps <= hint.end_percent


def residuals(hints_per_row: list[list[ControlHint]], images: dict[int, torch.Tensor], sample: torch.Tensor,
              timestep, embeds: torch.Tensor, added: dict | None, step: int, steps: int) -> dict:
    """UNet keyword arguments with the summed residuals of every active hint, or {} when none is active.

    The UNet batch is rows x images (one row per Cond), `sample` is one row's scaled latents. Each hint
    runs once, on the rows that carry it; rows without it get zero residuals from it."""
    batch = sample.shape[0]
    total_rows = len(hints_per_row)
    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    seen: set[int] = set()
    for hint in (h for row in hints_per_row for h in row):
        if id(hint) in seen or not is_active(hint, step, steps):
            continue
        seen.add(id(hint))
        rows = [r for r, row in enumerate(hints_per_row) if any(h is hint for h in row)]
        index = torch.cat([torch.arange(r * batch, (r + 1) * batch) for r in rows]).to(embeds.device)
        model = hint.control_net.model
        _check_fits(hint.control_net, embeds, added)
        hint_down, hint_mid = model(
            sample.repeat(len(rows), 1, 1, 1).to(model.dtype), timestep,
            encoder_hidden_states=embeds[index].to(model.dtype),
            controlnet_cond=images[id(hint)].repeat(len(rows), 1, 1, 1),
            conditioning_scale=hint.strength,
            added_cond_kwargs={k: v[index] for k, v in added.items()} if added else None,
            return_dict=False)
        if down is None:
            down = [d.new_zeros((total_rows * batch, *d.shape[1:])) for d in hint_down]
            mid = hint_mid.new_zeros((total_rows * batch, *hint_mid.shape[1:]))
        for acc, d in zip(down, hint_down):
            acc[index] += d
        mid[index] += hint_mid
    if down is None:
        return {}
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def _check_fits(control_net: ControlNet, embeds: torch.Tensor, added: dict | None) -> None:
    """A clear error for a ControlNet of another family than the model it is sampled with."""
    config = control_net.model.config
    needs_sizes = config.addition_embed_type == "text_time"
    if config.cross_attention_dim != embeds.shape[-1] or needs_sizes != (added is not None):
        raise ValueError(f"ControlNet {control_net.name!r} is an {control_net.family.name} ControlNet and does not "
                         f"fit this model ({embeds.shape[-1]}-wide text embeddings"
                         f"{', SDXL size conditioning' if added is not None else ''}): use one made for the "
                         "model's family")
