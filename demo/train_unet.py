"""Stages 2 and 3: the text encoder and UNet, trained together on the VAE's cached latents, then
fine-tuned to place objects where the prompt says (the layout stage).

The recipe is SD's (epsilon prediction, the scaled-linear schedule, 10% empty captions so that
classifier-free guidance works) with five additions that make a small, short run go further:
  * offset noise: each image's noise gets a random constant per channel, so the model learns to set
    an image's overall colour (the background) from the prompt; with SD's schedule alone the last
    timestep still carries the training image's mean, and sampling from pure noise leaves it to chance;
  * min-SNR loss weighting (gamma 5), which stops the nearly-clean timesteps dominating;
  * latent cells covered by objects weigh more in the loss: objects are a small share of each image,
    yet their colour, shape and place are what prompts ask for;
  * an EMA of the weights, which is what gets saved;
  * in the layout stage, the first sampling step trained as sampling meets it (see FirstStep): without
    it the model reads an object's position from the faint signal SD's schedule leaves at t = 999, and
    then takes it from the initial noise when it samples, whatever the prompt says; the low-noise steps
    are meanwhile distilled from the plain stage's model, so that they keep drawing its shapes;
The UNet stages train under bfloat16 autocast where the CPU computes it (train_common.bfloat16_native).
Text embeddings are computed as text_encode.encode computes them at inference (see train_data.embed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from . import train_models, train_samples, train_vae, world
from .train_common import Plan, Settings, StageDir, Trainer, save_grid, to_uint8
from .train_data import embed, object_cover, pick_tokens, two_objects_one_in_a_corner, world_data

NAME = "unet"
# The second stage fine-tunes the first one's result with FirstStep: placing objects from the prompt is
# learnt there, once colour and shape have formed. Trained from the start, FirstStep takes half of
# every batch away from ordinary examples: from scratch at share 0.5, 3,600 steps reached colour right
# 42% and shape right 29% (position 71%), where the plain recipe reaches 96% and 83% (position 17%).
LAYOUT = "unet_layout"
# The third stage goes on with the layout recipe, half of each batch drawn from scenes of two objects, one
# of them in a corner: inpainting a new object into a corner asks for exactly such a scene, and with
# the layout stage's batches (a third of them such scenes) the object often came out partly outside
# the painted square or not at all.
CORNERS = "unet_corners"
FINAL = CORNERS  # the stage whose UNet and text encoder the ControlNets and the checkpoint use
# 3,600 steps at batch 64 (230k examples) take 36-39 minutes on two idle AMX cores under bfloat16
# autocast (0.58-0.63 s each; 1.2 s in float32, 73 minutes, over a stage's 45); the loss curve is float32's
# to within 1%. A fixed count keeps the model the same when the machine is busy with other work
# meanwhile (a time budget would train fewer steps). Shape grows with the examples seen: batch 48 for
# 3,600 steps gave background, colour, shape, position right 100/98/42/10%, and 1,200 more took shape
# to 62%; 2,700 steps at batch 64 about 50%.
PLAN = Plan(budget_minutes=39, batch=64, lr=6e-4, warmup=200, ema=0.999, steps=3600, mixed_precision=True)
# The layout stage trains the noisy end (t >= 500) with FirstStep and holds the steps below to the plain
# stage's own predictions (held_targets): the fine-tunes that placed objects right also drifted those
# low-noise steps, which draw the shapes. Sampling with a 1,400-step fine-tune (lr 1e-4) for the first
# 10 of 20 steps and its start model for the rest gave 100/98/90/94%, the fine-tune alone 100/83/46/98%.
# Held with weight 10, the fine-tune of the shipped plain UNet gives 100/96/75/94% and CFG gain 0.14;
# weight 50 holds the noisy end back too (position 27%); min-SNR's weight there (0.3-1) holds nothing.
# On a from-scratch plain UNet (4,800 steps at batch 48: 100/96/60/4%) it gave only 96/83/56/21%. This
# plan's plain stage under bfloat16 (100/96/90/17%) loses more shape in it: 100/96/67/98%, and holding
# below t 700 instead of 500 gave 100/98/69/90%, and half the learning rate 100/98/71/25%.
LAYOUT_PLAN = Plan(budget_minutes=14, batch=48, lr=1e-4, warmup=20, ema=0.998, steps=1400, mixed_precision=True)
HOLD_BELOW = 500
# From the layout stage's UNet shipped before, these 600 steps took inpainting's yellow corner from 77%
# to 94% of 48, txt2img staying at 100/96/75/96%; ControlNets retrained on the result: canny edge IoU
# 0.63 (0.68 before), depth2img 0.89 (0.95). On two AMD EPYC cores they take 7 minutes under bfloat16
# autocast (1.4 steps a second), 9 in float32.
CORNERS_PLAN = Plan(budget_minutes=7, batch=48, lr=1e-4, warmup=20, ema=0.998, steps=600, mixed_precision=True)
CORNER_PAIRS_SHARE = 0.5
CAPTION_DROPOUT = 0.1
NOISE_OFFSET = 0.1
MIN_SNR_GAMMA = 5.0
OBJECT_WEIGHT = 3.0  # extra loss weight of a latent cell fully covered by objects
FIRST_STEP_SHARE = 0.5  # in the layout stage; share 0.25 from t 970 gave position right 38%
FIRST_STEP_X0_WEIGHT = 1.0  # in the layout stage, as in every layout run measured above
# img2img at low denoise repaints the input in the prompt's colours (input kept at 0.3: 0%): with
# captions that always agree with the images, the low-noise steps learn to take colours from the prompt
# even where x_t shows them plainly. Captions that name other colours at low noise teach them to keep
# x_t's, but cost shape and inpainting, which needs those steps to follow the prompt (measured on 48
# txt2img / 16 img2img / 16 inpaint images; shape right, input kept at 0.3, yellow inpainted):
#   none (the layout stage's UNet):                                 75%, 0%, 81%
#   plain stage, 25% of the captions below t 400 recoloured:         60%, 71%, 71% (of 48)
#   plain stage, whole captions of other images instead:             42%, 62%, 81%
#   layout stage, half the held examples below t 500 recoloured for
#   the student, the teacher reading the true caption:               67%, 81%, 56% (position right 42%)
#   the same below t 300:                                            67%, 56%, 56%
#   600 more steps of the layout stage's UNet, its own teacher, below
#   t 300 for half the examples (lr 5e-5; colour right 85%):        71%, 38%, 62%
#   the same below t 350 for all of them (lr 1e-4; colour 69%):     65%, 56%, 62%
#   600 more steps of unet_corners (94% inpainted), its own teacher, below t 260
#   for three quarters of the examples, the text encoder frozen
#   (colour right 83%):                                             67%, 44%, 85%
#   the same, a quarter of each batch at t 350-700 from a recoloured
#   render with the true caption and the true render as the target
#   (so that those steps set the colours; colour right 71%):        50%, 35%, 94%
# Inpainting leans on those steps because the object forms late: in the layout stage's UNet the masked
# corner's x0 estimate is yellow in 69% of the 16 after 10 of the 20 steps and 75% after 14 (81% at
# the end), and a prompt that says purple instead of yellow from step 14 on (prompt editing) leaves
# yellow in 6%. A model that keeps x_t's colours below t 300 can inpaint no better than those 75%.
# At denoise 0.3 the last two keep the input's background (81-88%) and position (88-90%), but not its
# object colour (42-56%; the prompt's 8-10%, the rest other colours) or shape (33-37%; the prompt's
# 42-44%): on 16x16 latents an object's outline is a detail of a cell or two, which the last steps draw
# in txt2img too, so steps that ignore the prompt there cost txt2img its shapes and colours.


@dataclass(frozen=True)
class Recipe:
    """How one of the UNet stages trains."""

    plan: Plan
    first_step: FirstStep
    start_from: str | None  # the stage whose result it fine-tunes; None: from random weights
    seed: int
    hold_below: int = 0  # timesteps below this keep start_from's predictions (see held_targets)
    hold_weight: float = 10.0  # their loss weight: min-SNR's (0.3-1 there) lets the noisy end drag them along
    corner_pairs: float = 0.0  # share of each batch drawn from two-object scenes with one in a corner


def load(settings: Settings, name: str = FINAL) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """The trained UNet and text encoder: stage `name`'s result (by default, the finished ones)."""
    folder = StageDir(settings, name).path / "result"
    return (UNet2DConditionModel.from_pretrained(folder / "unet").eval(),
            CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True).eval())


def scaled_latents(settings: Settings, vae) -> torch.Tensor:
    """The dataset's cached latents in UNet space (times the VAE's scaling factor)."""
    return torch.from_numpy(np.load(train_vae.latents_file(settings))) * vae.config.scaling_factor


def held_targets(teacher: tuple[UNet2DConditionModel, CLIPTextModel], x_t: torch.Tensor, t: torch.Tensor,
                 tokens: torch.Tensor, eps: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """`eps` with the `held` examples (a boolean mask, [B]) replaced by the `teacher`'s (UNet, text
    encoder) own predictions. A fine-tune that teaches the noisy end something new also drifts the
    low-noise steps it shares its weights with, where the start model already draws shapes well;
    distilling them from the start model keeps those steps as they were."""
    if not held.any():
        return eps
    unet, text_encoder = teacher
    with torch.no_grad():
        predicted = unet(x_t[held], t[held], encoder_hidden_states=embed(text_encoder, tokens[held])).sample
    eps = eps.clone()
    eps[held] = predicted.to(eps.dtype)  # bfloat16 under autocast
    return eps


class Diffusion:
    """The forward process of SD's schedule, and the training loss of an epsilon-predicting model.

    With SD's schedule a 16x16 latent still shows where its objects are until t ~ 900, so a model
    can learn to denoise without ever taking the layout from its conditioning, and then reads the
    layout from the initial noise when it samples. `high_noise` counters that where the layout must
    come from a hint (the ControlNets): timesteps drawn towards the noisy end, low-frequency noise at
    the objects' scale from `low_freq_from` on (the noise itself hides where the objects are, as
    offset noise hides their mean colour), and a floor under the loss weight of the noisiest steps."""

    def __init__(self, high_noise: HighNoise | None = None, first_step: FirstStep | None = None):
        self.alphas_cumprod = train_models.alphas_cumprod()
        self.high_noise = high_noise or HighNoise()
        self.first_step = first_step or FirstStep()

    def noised(self, x0: torch.Tensor, noise: torch.Generator):
        """(x_t, t, eps) for random timesteps, with offset noise (and low-frequency noise, if set)."""
        batch, channels, size = x0.shape[0], x0.shape[1], x0.shape[-1]
        high = self.high_noise
        steps = len(self.alphas_cumprod)
        if high.t_power == 1.0:
            t = torch.randint(0, steps, (batch,), generator=noise)
        else:
            u = torch.rand(batch, generator=noise)
            t = ((steps - 1) * u ** (1.0 / high.t_power)).round().long()
        eps = torch.randn(x0.shape, generator=noise) + NOISE_OFFSET * torch.randn(batch, channels, 1, 1,
                                                                                 generator=noise)
        if high.low_freq:
            fields = sum(F.interpolate(torch.randn(batch, channels, cells, cells, generator=noise), size=size,
                                       mode="bilinear", align_corners=False) for cells in HighNoise.CELLS)
            eps = eps + high.low_freq * (t >= high.low_freq_from).float().view(-1, 1, 1, 1) * fields
        first = self.first_step
        if first.share:
            drawn = torch.rand(batch, generator=noise) < first.share
            t = torch.where(drawn, torch.randint(first.t_from, steps, (batch,), generator=noise), t)
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
        if first.share:
            # x_t is plain noise, as sampling starts; the target is the noise that makes the sampler's
            # x0 estimate (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) the training image
            free = self.signal_free(t).view(-1, 1, 1, 1)
            pure = torch.randn(x0.shape, generator=noise)
            x_t = torch.where(free, pure, x_t)
            eps = torch.where(free, (pure - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt(), eps)
        return x_t, t, eps

    def signal_free(self, t: torch.Tensor) -> torch.Tensor:
        """Which timesteps are trained from signal-free x_t (FirstStep)."""
        return (t >= self.first_step.t_from) if self.first_step.share else torch.zeros_like(t, dtype=torch.bool)

    def loss(self, predicted: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, cover: torch.Tensor,
             held: torch.Tensor | None = None, held_weight: float = 1.0) -> torch.Tensor:
        """MSE on the noise, weighted per example by clamp(SNR, floor, gamma) / SNR (min-SNR, with an
        optional floor) and per latent cell by its object `cover` [B,1,h,w]; examples marked `held`
        (distilled, see held_targets) weigh `held_weight` instead."""
        snr = self.alphas_cumprod[t] / (1 - self.alphas_cumprod[t])
        cells = 1.0 + OBJECT_WEIGHT * cover
        per_example = (cells * (predicted - eps).square()).mean(dim=(1, 2, 3)) / cells.mean(dim=(1, 2, 3))
        weight = snr.clamp(min=self.high_noise.snr_floor, max=MIN_SNR_GAMMA) / snr
        if self.high_noise.snr_floor:
            weight = weight / weight.mean()  # the floor multiplies the noisiest steps' weight up to ~20x
        # the noise error over SNR is the x0 error: what decides the first step's layout
        weight = torch.where(self.signal_free(t), self.first_step.x0_weight / snr, weight)
        if held is not None:
            weight = torch.where(held, torch.full_like(weight, held_weight), weight)
        return (weight * per_example).mean()


@dataclass(frozen=True)
class FirstStep:
    """Trains the top of the schedule from x_t that is plain noise, as the first sampling step sees it.

    SD's schedule leaves sqrt(alpha_bar) ~ 0.07 of the image in x_t at t = 999: enough for a model to
    find the objects there, and the epsilon loss, which weighs x0 errors by the SNR (~0.005), hardly
    asks for more. Sampling starts from pure noise, so such a model places objects wherever the noise
    happens to suggest. A `share` of each batch is drawn from t >= `t_from`; at those timesteps x_t
    carries no signal and the loss is the x0 error (times `x0_weight`), so the prompt alone must say
    where the object goes. The default share 0 is SD's plain recipe."""

    share: float = 0.0
    t_from: int = 950
    x0_weight: float = 0.3  # brings the x0 errors to about the size of the other examples' loss


@dataclass(frozen=True)
class HighNoise:
    """How much Diffusion emphasises the noisy end of the schedule; the defaults are SD's plain recipe."""

    CELLS = (2, 4)  # the low-frequency fields' grids: objects span about a quarter to a half of the canvas
    t_power: float = 1.0  # timesteps t = 999 * u^(1/t_power): above 1 draws more noisy steps
    low_freq: float = 0.0  # std of each low-frequency field added to the noise
    low_freq_from: int = 500  # the first timestep that gets them
    snr_floor: float = 0.0  # the loss weight's floor, on the SNR scale


_LAYOUT_FIRST_STEP = FirstStep(share=FIRST_STEP_SHARE, x0_weight=FIRST_STEP_X0_WEIGHT)
RECIPES = {NAME: Recipe(PLAN, FirstStep(), start_from=None, seed=2),
           LAYOUT: Recipe(LAYOUT_PLAN, _LAYOUT_FIRST_STEP, start_from=NAME, seed=7, hold_below=HOLD_BELOW),
           CORNERS: Recipe(CORNERS_PLAN, _LAYOUT_FIRST_STEP, start_from=LAYOUT, seed=17, hold_below=HOLD_BELOW,
                           corner_pairs=CORNER_PAIRS_SHARE)}


def run(settings: Settings, name: str = NAME) -> bool:
    recipe = RECIPES[name]
    stage = StageDir(settings, name)
    data = world_data(settings)
    vae = train_vae.load(settings)
    latents = scaled_latents(settings, vae)
    cover = object_cover(data, train_models.LATENT_SIZE)
    # (a tiny smoke-test world may have no such scene: then batches stay as they are)
    corner_pairs = two_objects_one_in_a_corner(data) if recipe.corner_pairs else np.empty(0, np.int64)
    if recipe.start_from is None:
        torch.manual_seed(settings.seed + recipe.seed)
        unet, text_encoder = train_models.unet(), train_models.text_encoder()
    else:
        unet, text_encoder = load(settings, recipe.start_from)
    train_models.attention_for_training(unet, text_encoder)
    trainer = Trainer(stage, settings, recipe.plan, {"unet": unet, "text_encoder": text_encoder}, seed=recipe.seed)
    diffusion = Diffusion(first_step=recipe.first_step)
    teacher = None
    if recipe.hold_below:
        teacher = load(settings, recipe.start_from)
        train_models.attention_for_training(*teacher)
        for module in teacher:
            module.requires_grad_(False)

    def step(rng, noise, batch):
        index = rng.integers(len(data), size=batch)
        if len(corner_pairs):
            drawn = rng.random(batch) < recipe.corner_pairs
            index[drawn] = rng.choice(corner_pairs, size=int(drawn.sum()))
        tokens = pick_tokens(data, index, rng, CAPTION_DROPOUT)
        x_t, t, eps = diffusion.noised(latents[index], noise)
        held = None
        if teacher is not None:
            held = t < recipe.hold_below
            eps = held_targets(teacher, x_t, t, tokens, eps, held)
        predicted = unet(x_t, t, encoder_hidden_states=embed(text_encoder, tokens)).sample
        return diffusion.loss(predicted, eps, t, cover[index], held, recipe.hold_weight)

    scenes = train_samples.sample_scenes()

    def sample(step):
        model, clip, vae_value = train_samples.runtime(trainer.trained("unet"), trainer.trained("text_encoder"), vae)
        images = train_samples.txt2img(model, clip, vae_value, [world.prompt_for(s) for s in scenes])
        truth = [world.render(s)[0] for s in scenes]
        save_grid(truth + to_uint8(images), stage.file(f"samples_{step:06d}.png"), columns=len(scenes))

    if not trainer.run(step, sample):
        return False
    folder = stage.path / "result"
    trainer.trained("unet").save_pretrained(folder / "unet")
    trainer.trained("text_encoder").save_pretrained(folder / "text_encoder")
    stage.finish({**trainer.summary(), "parameters": {"unet": train_models.parameters(unet),
                                                      "text_encoder": train_models.parameters(text_encoder)}})
    return True
