"""Stages 3 and 4: ControlNets for canny edges and depth maps, on the frozen UNet and text encoder.

Each starts as a copy of the UNet's encoder half (ControlNetModel.from_unet) whose outputs pass
through zero-initialised convolutions, so training starts from the UNet's own behaviour. Hints are
what the studio will feed at inference: canny edges from annotators.canny (the Canny node, default
thresholds) and depth maps with 1 = near, as the depth preprocessors give. Half the captions are
dropped, as in the ControlNet paper, so the hint alone must carry the layout.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import ControlNetModel

from ..nodes.runtime import annotators
from ..nodes.runtime.model_types import ControlNet
from . import train_models, train_samples, train_unet, train_vae, world
from .train_common import Plan, Settings, StageDir, Trainer, save_grid, to_uint8
from .train_data import embed, object_cover, pick_tokens, world_data
from .train_unet import HighNoise

# Fixed step counts keep the results independent of other load meanwhile; the budgets are minutes on
# two AVX-512 cores (0.78 s a step in float32; under bfloat16 autocast 0.39 idle, 0.63-0.67 beside an
# evaluation). Both take 700 steps: the canny one took 1,300 until the vae_decoder stage showed its
# edges were there all along (IoU 0.67 after 1,300 steps, 0.68 after 700).
PLANS = {"controlnet_canny": Plan(budget_minutes=5, batch=32, lr=1e-3, warmup=100, steps=700, mixed_precision=True),
         "controlnet_depth": Plan(budget_minutes=5, batch=32, lr=1e-3, warmup=100, steps=700, mixed_precision=True)}
# Where the noisy steps are trained harder (train_unet.Diffusion): with the plain recipe, 2,000 steps
# left the canny ControlNet without effect (edge IoU 0.06; objects wherever the noise put them), as
# x_t itself shows the layout at all but the noisiest steps; with it, IoU 0.23 in 1,300 steps, and
# depth2img's correlation rose from 0.77 to above 0.8 in 700 steps (1,200 before). Trained on the
# layout stage's UNet, which places objects from the prompt: IoU 0.21, depth2img correlation 0.92.
# Those IoUs were capped by the VAE's first decoder, whose border frame Canny read as edges: through
# the vae_decoder stage's decoder the same ControlNets give IoU 0.67 and depth2img 0.95.
HIGH_NOISE = dict.fromkeys(("controlnet_canny", "controlnet_depth"),
                           HighNoise(t_power=2.0, low_freq=0.5, low_freq_from=500, snr_floor=0.1))
CAPTION_DROPOUT = 0.5
CANNY_THRESHOLDS = (0.4, 0.8)  # the Canny node's defaults


def canny_hints(images: np.ndarray, depths: np.ndarray) -> torch.Tensor:
    """IMAGE [B,H,W,3] of white edges on black."""
    return annotators.canny(torch.from_numpy(np.asarray(images)).float() / 255.0, *CANNY_THRESHOLDS)


def depth_hints(images: np.ndarray, depths: np.ndarray) -> torch.Tensor:
    """IMAGE [B,H,W,3]: the true depth, 1 = near, in all three channels."""
    return torch.from_numpy(np.asarray(depths, dtype=np.float32))[..., None].repeat(1, 1, 1, 3)


HINTS = {"controlnet_canny": canny_hints, "controlnet_depth": depth_hints}


def load(settings: Settings, name: str) -> ControlNetModel:
    return ControlNetModel.from_pretrained(StageDir(settings, name).path / "result").eval()


def run(settings: Settings, name: str) -> bool:
    stage = StageDir(settings, name)
    hints_of = HINTS[name]
    data = world_data(settings)
    vae = train_vae.load(settings)
    latents = train_unet.scaled_latents(settings, vae)
    cover = object_cover(data, train_models.LATENT_SIZE)
    unet, text_encoder = train_unet.load(settings)
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    controlnet = train_models.controlnet(unet)
    train_models.attention_for_training(unet, text_encoder, controlnet)
    trainer = Trainer(stage, settings, PLANS[name], {"controlnet": controlnet}, seed=3 + list(HINTS).index(name))
    diffusion = train_unet.Diffusion(HIGH_NOISE[name])

    def step(rng, noise, batch):
        index = rng.integers(len(data), size=batch)
        hints = hints_of(data.images[index], data.depths[index]).movedim(-1, 1)
        with torch.no_grad():
            context = embed(text_encoder, pick_tokens(data, index, rng, CAPTION_DROPOUT))
        x_t, t, eps = diffusion.noised(latents[index], noise)
        down, mid = controlnet(x_t, t, encoder_hidden_states=context, controlnet_cond=hints, return_dict=False)
        predicted = unet(x_t, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
        return diffusion.loss(predicted, eps, t, cover[index])

    scenes = train_samples.sample_scenes()
    rendered = [world.render(s) for s in scenes]
    sample_hints = hints_of(np.stack([r[0] for r in rendered]), np.stack([r[1] for r in rendered]))
    model, clip, vae_value = train_samples.runtime(unet, text_encoder, vae)

    def sample(step):
        control_net = ControlNet(trainer.trained("controlnet"), train_samples.family(), name=name)
        prompts = [world.prompt_for(s) for s in scenes]
        images = train_samples.txt2img(model, clip, vae_value, prompts, control_net=control_net, hints=sample_hints)
        save_grid(to_uint8(sample_hints) + to_uint8(images), stage.file(f"samples_{step:06d}.png"),
                  columns=len(scenes))

    if not trainer.run(step, sample):
        return False
    trainer.trained("controlnet").save_pretrained(stage.path / "result")
    stage.finish({**trainer.summary(), "parameters": train_models.parameters(controlnet)})
    return True
