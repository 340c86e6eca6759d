"""Stage 1: the VAE. 128x128 images <-> 4x16x16 latents.

Flat colours and sharp edges are all there is to learn, so an L1 + L2 reconstruction loss with a
small KL term (which keeps the latents from drifting to huge values) is enough: no perceptual or
adversarial loss. Pixels of objects (where the true depth is not background) weigh more: they are a
small share of each image, yet their colour and outline are what a prompt asks for. When trained,
it encodes the whole dataset once (the UNet and ControlNets train on these latents) and sets
`scaling_factor` to 1 / std of the latents, as SD's 0.18215 was chosen, so the UNet sees
unit-variance inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from . import train_models
from .train_common import Plan, Settings, StageDir, Trainer, save_grid
from .train_data import WorldData, images_tensor, world_data

NAME = "vae"
# A fixed step count, as the bundled VAE took them in 10.5 minutes (0.16 s a step): under a time budget a
# run on a busy machine got 2,065 steps, and the UNet trained on its latents drew backgrounds right 83%.
PLAN = Plan(budget_minutes=10.5, batch=4, lr=1e-3, warmup=100, ema=0.999, steps=3900)  # small batches: more steps
KL_WEIGHT = 1e-7  # on the KL summed over the 1,024 latent values: ~1e-4 per value against mean pixel errors
OBJECT_WEIGHT = 5.0  # an object pixel's weight in the reconstruction loss; background pixels weigh 1
SHOWN = 8  # images in the reconstruction grids


def latents_file(settings: Settings) -> Path:
    return Path(settings.out) / "latents.npy"


def load(settings: Settings) -> AutoencoderKL:
    """The trained VAE (the stage's result)."""
    return AutoencoderKL.from_pretrained(StageDir(settings, NAME).path / "result").eval()


def run(settings: Settings) -> bool:
    stage = StageDir(settings, NAME)
    data = world_data(settings)
    torch.manual_seed(settings.seed)
    vae = train_models.vae()
    trainer = Trainer(stage, settings, PLAN, {"vae": vae}, seed=1)

    def step(rng, noise, batch):
        index = rng.integers(len(data), size=batch)
        pixels = images_tensor(data, index)
        weight = 1.0 + OBJECT_WEIGHT * torch.from_numpy(np.asarray(data.depths[index]) > 0)[:, None].float()
        posterior = vae.encode(pixels).latent_dist
        error = vae.decode(posterior.sample(generator=noise)).sample - pixels
        reconstruction = (weight * (error.abs() + error.square())).mean() / weight.mean()
        return reconstruction + KL_WEIGHT * posterior.kl().mean()

    def sample(step):
        shown = np.arange(min(SHOWN, len(data)))
        pixels = images_tensor(data, shown)
        recon = vae.eval().decode(vae.encode(pixels).latent_dist.mode()).sample
        rows = [_uint8(pixels), _uint8(recon)]  # originals above, reconstructions below
        save_grid([im for row in rows for im in row], stage.file(f"samples_{step:06d}.png"), columns=len(shown))

    if not trainer.run(step, sample):
        return False
    trained = trainer.trained("vae")
    latents = encode_all(trained, data)
    std = float(latents.std())
    trained.register_to_config(scaling_factor=1.0 / std)
    trained.save_pretrained(stage.path / "result")
    np.save(latents_file(settings), latents)
    stage.finish({"step": trainer.step, "parameters": train_models.parameters(trained),
                  "seconds_per_step": trainer.train_seconds / max(trainer.step, 1),
                  "latent_mean": float(latents.mean()), "latent_std": std, "scaling_factor": 1.0 / std})
    print(f"[{NAME}] done: latent std {std:.3f}, scaling_factor {1.0 / std:.4f}", flush=True)
    return True


@torch.no_grad()
def encode_all(vae: AutoencoderKL, data: WorldData, chunk: int = 64) -> np.ndarray:
    """Latent means (unscaled) of every image: float32 [N,4,16,16]."""
    print(f"[{NAME}] encoding {len(data)} images to latents", flush=True)
    out = np.empty((len(data), 4, train_models.LATENT_SIZE, train_models.LATENT_SIZE), np.float32)
    for start in range(0, len(data), chunk):
        index = np.arange(start, min(start + chunk, len(data)))
        out[index] = vae.encode(images_tensor(data, index)).latent_dist.mean.numpy()
    return out


def _uint8(pixels: torch.Tensor) -> list[np.ndarray]:
    return list(((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
