"""Sample grids while training, made through the engine's own runtime: the trained components are
wrapped as MODEL / CLIP / VAE / CONTROL_NET values and generate with text_encode, control and
sampling exactly as the studio will once they are saved and reloaded."""
from __future__ import annotations

import numpy as np
import torch

from ..nodes.runtime import control, text_encode, vae_codec
from ..nodes.runtime.model_types import SD1, ControlNet, DiffusionModel, Family, TextEncoder, Vae
from ..nodes.runtime.sampling import sample
from ..nodes.runtime.tokenizers import clip_tokenizer
from . import train_models, world

STEPS, CFG, SAMPLER, SCHEDULE = 20, 5.0, "euler", "normal"


def family() -> Family:
    return Family(SD1)


def runtime(unet, text_encoder, vae) -> tuple[DiffusionModel, TextEncoder, Vae]:
    """Diffusers / transformers modules as the values a checkpoint loader returns."""
    return (DiffusionModel(unet.eval(), family(), dict(train_models.SCHEDULER), name="inkwash-demo"),
            TextEncoder([clip_tokenizer()], [text_encoder.eval()], family()),
            Vae(vae.eval(), family()))


def sample_scenes(count: int = 8) -> list[world.Scene]:
    """Scenes whose prompts the grids show: mostly held-out single objects (combinations never seen
    in training, the evaluation's kind of prompt), then two-object scenes."""
    held_out = world.held_out_scenes(count - 2, seed=0)
    rng = np.random.default_rng(0)
    return held_out + [world.random_scene(rng, n_objects=2) for _ in range(2)]


def txt2img(model: DiffusionModel, clip: TextEncoder, vae: Vae, prompts: list[str], seed: int = 0,
            control_net: ControlNet | None = None, hints: torch.Tensor | None = None) -> torch.Tensor:
    """One image per prompt (seed + i), IMAGE [B,128,128,3]; with `control_net`, hint i (IMAGE) guides image i."""
    images = []
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            positive, negative = text_encode.encode(clip, prompt), text_encode.encode(clip, "")
            if control_net is not None:
                positive, negative = control.apply(positive, negative, control_net, hints[i:i + 1], 1.0)
            size = train_models.LATENT_SIZE
            latent = {"samples": torch.zeros(1, 4, size, size)}
            out = sample(model, positive, negative, latent, seed + i, STEPS, CFG, SAMPLER, SCHEDULE)
            images.append(vae_codec.decode(vae, out["samples"]))
    return torch.cat(images)
