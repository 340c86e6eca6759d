"""Stage 1: the VAE. 128x128 images <-> 4x16x16 latents; then its decoder alone, fine-tuned.

Flat colours and sharp edges are all there is to learn, so an L1 + L2 reconstruction loss with a
small KL term (which keeps the latents from drifting to huge values) is enough: no perceptual or
adversarial loss. Pixels of objects (where the true depth is not background) weigh more: they are a
small share of each image, yet their colour and outline are what a prompt asks for. When trained,
it encodes the whole dataset once (the UNet and ControlNets train on these latents) and sets
`scaling_factor` to 1 / std of the latents, as SD's 0.18215 was chosen, so the UNet sees
unit-variance inputs.

The second stage (vae_decoder) fine-tunes the decoder on those cached latents, the encoder frozen, as
SD's ft-MSE VAE improved its decoder without changing the latent space the UNet learns. It adds a loss
on the image gradients: the first stage's decoder left a frame of wrong pixels along the image border
and rounded corners off, both of which show up as false edges when a Canny preprocessor reads its
images (a perfect recolouring of an input kept only 0.25 edge IoU after an encode-decode).
"""
from __future__ import annotations

from functools import partial
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
DECODER = "vae_decoder"
FINAL = DECODER  # the stage whose VAE the other stages and the checkpoint use
# 1,500 steps take about 9 minutes on two idle cores (0.35 s a step). An encode-decode of a perfect
# recolouring then keeps edge IoU 0.76 (0.34 after 600 steps without the border weight, 0.64 with it),
# the outer pixels' mean error falls from 18 levels to 1.4, the rest's from 2.0 to 1.2.
DECODER_PLAN = Plan(budget_minutes=9, batch=8, lr=3e-4, warmup=50, ema=0.999, steps=1500)
EDGE_WEIGHT = 1.0  # weight of the image-gradient error, against the pixel error
BORDER, BORDER_WEIGHT = 2, 10.0  # the outer pixels' extra weight: zero padding makes them the hardest


def latents_file(settings: Settings) -> Path:
    return Path(settings.out) / "latents.npy"


def load(settings: Settings, name: str = FINAL) -> AutoencoderKL:
    """The trained VAE: stage `name`'s result (by default, the finished one)."""
    return AutoencoderKL.from_pretrained(StageDir(settings, name).path / "result").eval()


def reconstruction_loss(decoded: torch.Tensor, pixels: torch.Tensor, depths: np.ndarray,
                        edge_weight: float = 0.0, border_weight: float = 0.0) -> torch.Tensor:
    """L1 + L2 pixel error, object pixels (depth above background) weighing 1 + OBJECT_WEIGHT and the
    outer BORDER pixels 1 + `border_weight`; plus, with `edge_weight`, the L1 error of the horizontal
    and vertical pixel differences."""
    weight = 1.0 + OBJECT_WEIGHT * torch.from_numpy(np.asarray(depths) > 0)[:, None].float()
    if border_weight:
        ring = torch.ones(weight.shape[-2:], dtype=torch.bool)
        ring[BORDER:-BORDER, BORDER:-BORDER] = False
        weight = weight + border_weight * ring
    error = decoded - pixels
    loss = (weight * (error.abs() + error.square())).mean() / weight.mean()
    if edge_weight:
        for dim in (2, 3):
            edge_error = (decoded.diff(dim=dim) - pixels.diff(dim=dim)).abs()
            loss = loss + edge_weight * edge_error.mean()
    return loss


def run(settings: Settings) -> bool:
    stage = StageDir(settings, NAME)
    data = world_data(settings)
    torch.manual_seed(settings.seed)
    vae = train_models.vae()
    trainer = Trainer(stage, settings, PLAN, {"vae": vae}, seed=1)

    def step(rng, noise, batch):
        index = rng.integers(len(data), size=batch)
        pixels = images_tensor(data, index)
        posterior = vae.encode(pixels).latent_dist
        decoded = vae.decode(posterior.sample(generator=noise)).sample
        return reconstruction_loss(decoded, pixels, data.depths[index]) + KL_WEIGHT * posterior.kl().mean()

    if not trainer.run(step, partial(_sample, stage, data, trainer)):
        return False
    trained = trainer.trained("vae")
    latents = encode_all(trained, data)
    std = float(latents.std())
    trained.register_to_config(scaling_factor=1.0 / std)
    trained.save_pretrained(stage.path / "result")
    np.save(latents_file(settings), latents)
    stage.finish({**trainer.summary(), "parameters": train_models.parameters(trained),
                  "latent_mean": float(latents.mean()), "latent_std": std, "scaling_factor": 1.0 / std})
    print(f"[{NAME}] done: latent std {std:.3f}, scaling_factor {1.0 / std:.4f}", flush=True)
    return True


def run_decoder(settings: Settings) -> bool:
    stage = StageDir(settings, DECODER)
    data = world_data(settings)
    vae = load(settings, NAME)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    latents = torch.from_numpy(np.load(latents_file(settings)))  # the frozen encoder's, as the UNet learns them
    trainer = Trainer(stage, settings, DECODER_PLAN, {"vae": vae}, seed=11)

    def step(rng, noise, batch):
        index = rng.integers(len(data), size=batch)
        decoded = vae.decode(latents[index]).sample
        return reconstruction_loss(decoded, images_tensor(data, index), data.depths[index], EDGE_WEIGHT,
                                   BORDER_WEIGHT)

    if not trainer.run(step, partial(_sample, stage, data, trainer)):
        return False
    trainer.trained("vae").save_pretrained(stage.path / "result")
    stage.finish({**trainer.summary(), "parameters": train_models.parameters(vae.decoder)})
    return True


def _sample(stage: StageDir, data: WorldData, trainer: Trainer, step: int) -> None:
    """Originals above, their reconstructions below."""
    shown = np.arange(min(SHOWN, len(data)))
    pixels = images_tensor(data, shown)
    vae = trainer.trained("vae")
    recon = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
    save_grid([im for row in (_uint8(pixels), _uint8(recon)) for im in row], stage.file(f"samples_{step:06d}.png"),
              columns=len(shown))


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
