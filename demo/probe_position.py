"""Does a checkpoint take an object's position from the prompt or from the noise?

    python -m inkwash.demo.probe_position [CHECKPOINT]

For "a large red circle <position> on a white background" at each of the world's nine positions, and
a few noise seeds, it prints per timestep how often the UNet's x0 prediction is nearest (of the nine
true latents) to the right one:
    noised truth   x_t made from the true latent: how much of the layout x_t itself gives away
    from noise     x_t pure noise, as when sampling starts, CFG 5: how much the prompt places it
Chance is 1 in 9. A model that binds position words scores well above chance from noise at t=999.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from ..nodes.runtime import text_encode, vae_codec
from ..nodes.runtime.checkpoint_load import load_checkpoint
from . import train_models, world

TIMESTEPS = (999, 950, 900, 800, 700, 500)
CFG = 5.0


def _embeds(clip, text: str) -> torch.Tensor:
    return text_encode.encode(clip, text)[0].embeds


def _nearest(x0: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Index of the nearest true latent for each prediction."""
    return ((x0[:, None] - truth[None]) ** 2).mean(dim=(2, 3, 4)).argmin(1)


@torch.no_grad()
def probe(checkpoint: str, seeds: int = 8) -> list[tuple[int, int, int, int]]:
    """(t, noised-truth hits, from-noise hits, trials) per timestep."""
    model, clip, vae = load_checkpoint(checkpoint)
    unet = model.unet.float().eval()
    alpha_bar = train_models.alphas_cumprod()
    scenes = [world.Scene("white", None, (world.Obj("circle", "red", "large", p),)) for p in world.POSITIONS]
    renders = torch.from_numpy(np.stack([world.render(s)[0] for s in scenes])).float() / 255
    truth = vae_codec.encode(vae, renders)
    prompts = [_embeds(clip, world.prompt_for(s)).expand(seeds, -1, -1) for s in scenes]
    empty = _embeds(clip, "").expand(seeds, -1, -1)
    size = train_models.LATENT_SIZE
    noise = torch.randn(seeds, 4, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for t in TIMESTEPS:
        a, steps = alpha_bar[t], torch.full((seeds,), t)
        noised = from_noise = 0
        for i, prompt in enumerate(prompts):
            x = a.sqrt() * truth[i] + (1 - a).sqrt() * noise
            eps = unet(x, steps, encoder_hidden_states=prompt).sample
            noised += int((_nearest((x - (1 - a).sqrt() * eps) / a.sqrt(), truth) == i).sum())
            cond = unet(noise, steps, encoder_hidden_states=prompt).sample
            uncond = unet(noise, steps, encoder_hidden_states=empty).sample
            eps = uncond + CFG * (cond - uncond)
            from_noise += int((_nearest((noise - (1 - a).sqrt() * eps) / a.sqrt(), truth) == i).sum())
        rows.append((t, noised, from_noise, seeds * len(prompts)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inkwash.demo.probe_position", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", nargs="?", default="models/checkpoints/inkwash-demo.safetensors")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print("   t  noised truth  from noise (chance 1/9)")
    for t, noised, from_noise, trials in probe(args.checkpoint, args.seeds):
        print(f"{t:4d}  {noised:5d}/{trials}     {from_noise:5d}/{trials}", flush=True)


if __name__ == "__main__":
    main()
