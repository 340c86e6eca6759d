"""The sampling loop against diffusers' own pipelines (conditioning, ControlNet, SDXL), and what it
promises: the two noise rules, img2img steps, inpainting, inpaint/depth UNets, ControlNet, KSamplerAdvanced
splits, interrupts, previews. Each sampler's numbers against ComfyUI's: test_comfy_parity.py."""
import dataclasses

import pytest
import torch
from diffusers import (EulerDiscreteScheduler, StableDiffusionControlNetPipeline, StableDiffusionPipeline,
                       StableDiffusionXLPipeline)
from PIL import Image

from inkwash.nodes.core.sampling import KSampler, KSamplerAdvanced
from inkwash.nodes.declare import Interrupted, NodeContext
from inkwash.nodes.formats.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES
from inkwash.nodes.runtime import control, noise, sampling, sigmas, text_encode, vae_codec
from tiny_models import tiny_controlnet, tiny_sd1, tiny_sdxl

PROMPT, NEGATIVE = "a photo of a cat in the snow", "blurry"
H = W = 8  # latent size: 64x64 pixels


@pytest.fixture(scope="module")
def sd1():
    model, clip, vae = tiny_sd1()
    return model, clip, vae, text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE)


def empty(batch=1):
    return {"samples": torch.zeros(batch, 4, H, W)}


def run(sd1, sampler="euler", scheduler="normal", latent=None, seed=42, steps=4, cfg=7.0, **kw):
    model, _, _, pos, neg = sd1
    return sampling.sample(model, kw.pop("positive", pos), kw.pop("negative", neg), latent or empty(),
                           seed, steps, cfg, sampler, scheduler, **kw)["samples"]


def pipeline(cls, model, clip, vae, **components):
    """A diffusers pipeline whose Euler walks the sigmas of ComfyUI's "simple" schedule: the trained
    timesteps 999, 999 - 1000/steps, ... ("trailing" spacing), so both call the UNet at the same t."""
    scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="trailing")
    pipe = cls(vae=vae.vae, text_encoder=clip.encoders[0], tokenizer=clip.tokenizers[0], unet=model.unet,
               scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
               **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def start_latents(model, seed, batch=1):
    """ComfyUI's starting noise for the pipeline: diffusers scales latents by sigma_max, ComfyUI's full
    denoise by sqrt(1 + sigma_max^2)."""
    sigma_max = sigmas.DiscreteSchedule(model.scheduler_config).sigma_max
    return noise.batch_noise(seed, (batch, 4, H, W)) * (1 + sigma_max ** 2) ** 0.5 / sigma_max


# -- same numbers as diffusers' pipelines ---------------------------------------------------------------

def test_txt2img_matches_diffusers_pipeline(sd1):
    model, clip, vae, _, _ = sd1
    ours = vae_codec.decode(vae, run(sd1, "euler", "simple", latent=empty(2)))
    pipe = pipeline(StableDiffusionPipeline, model, clip, vae)
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, height=H * 8, width=W * 8, num_inference_steps=4,
                  guidance_scale=7.0, num_images_per_prompt=2, latents=start_latents(model, 42, 2),
                  output_type="pt").images
    assert (ours - theirs.movedim(1, -1)).abs().max() < 1e-4


def test_controlnet_matches_diffusers_pipeline(sd1):
    model, clip, vae, pos, neg = sd1
    net = tiny_controlnet()
    hint = torch.rand(1, H * 8, W * 8, 3, generator=torch.Generator().manual_seed(3))
    pos, neg = control.apply(pos, neg, net, hint, 0.7, 0.0, 0.5)
    ours = run(sd1, "euler", "simple", positive=pos, negative=neg)
    pipe = pipeline(StableDiffusionControlNetPipeline, model, clip, vae, controlnet=net.model)
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, image=hint.movedim(-1, 1), height=H * 8, width=W * 8,
                  num_inference_steps=4, guidance_scale=7.0, latents=start_latents(model, 42),
                  controlnet_conditioning_scale=0.7, control_guidance_start=0.0, control_guidance_end=0.5,
                  output_type="latent").images
    assert (ours - theirs).abs().max() < 1e-4


def test_sdxl_matches_diffusers_pipeline():
    model, clip, vae = tiny_sdxl()
    pos, neg = text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE)
    assert pos[0].embeds.shape == (1, 77, 64) and pos[0].pooled.shape == (1, 32)
    ours = sampling.sample(model, pos, neg, empty(), 7, 3, 5.0, "euler", "simple")["samples"]
    pipe = StableDiffusionXLPipeline(vae=vae.vae, text_encoder=clip.encoders[0], text_encoder_2=clip.encoders[1],
                                     tokenizer=clip.tokenizers[0], tokenizer_2=clip.tokenizers[1], unet=model.unet,
                                     scheduler=EulerDiscreteScheduler.from_config(model.scheduler_config,
                                                                                  timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, height=H * 8, width=W * 8, num_inference_steps=3,
                  guidance_scale=5.0, latents=start_latents(model, 7),
                  output_type="latent").images
    # diffusers derives its sigmas from float32 alphas, ComfyUI (and Inkwash) from float64 betas
    assert (ours - theirs).abs().max() < 1e-3 * theirs.abs().max()


def test_sdxl_refiner_reads_size_and_aesthetic_score():
    model, clip, _ = tiny_sdxl(refiner=True)
    pos, neg = text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE)
    plain = sampling.sample(model, pos, neg, empty(), 7, 2, 5.0, "euler", "normal")["samples"]
    pos[0].extra.update(aesthetic_score=9.0, width=1024, height=1024)
    scored = sampling.sample(model, pos, neg, empty(), 7, 2, 5.0, "euler", "normal")["samples"]
    assert torch.isfinite(plain).all() and not torch.equal(plain, scored)


def test_conditioning_lists_and_lengths(sd1):
    _, clip, _, pos, neg = sd1
    plain = run(sd1)
    # two identical entries average to the same guidance; a prompt repeated along its tokens attends the same
    assert (run(sd1, positive=pos + pos) - plain).abs().max() < 1e-4
    doubled = [dataclasses.replace(pos[0], embeds=pos[0].embeds.repeat(1, 2, 1))]
    assert (run(sd1, positive=doubled) - plain).abs().max() < 1e-3
    long = text_encode.encode(clip, " ".join(["cat"] * 100))
    assert torch.isfinite(run(sd1, positive=long)).all()
    with pytest.raises(ValueError, match="wide text embeddings"):
        run(sd1, positive=text_encode.encode(tiny_sdxl()[1], PROMPT))


def test_cfg_1_needs_no_negative(sd1):
    assert torch.isfinite(run(sd1, cfg=1.0, negative=[])).all()
    with pytest.raises(ValueError, match="negative"):
        run(sd1, negative=[])


# -- seeds: the two noise rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde"])  # both add noise at every step
def test_a1111_rule_batch_images_match_their_seed_alone(sd1, sampler):
    batch = run(sd1, sampler, latent=empty(3), seed=100, noise_rule="a1111")
    assert torch.equal(batch, run(sd1, sampler, latent=empty(3), seed=100, noise_rule="a1111"))
    for i in range(3):
        alone = run(sd1, sampler, seed=100 + i, noise_rule="a1111")
        # a batch runs other BLAS kernels than one image: float32 rounding, relative to latents of ~30
        torch.testing.assert_close(batch[i], alone[0], rtol=1e-5, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1])


def test_comfyui_rule_draws_one_tensor_for_the_batch(sd1):
    batch = run(sd1, "euler", latent=empty(2), seed=100)
    alone = run(sd1, "euler", seed=100)
    torch.testing.assert_close(batch[0], alone[0], rtol=1e-5, atol=1e-4)  # the first rows of the same draw
    second_seed = run(sd1, "euler", seed=101)
    assert not torch.allclose(batch[1], second_seed[0], atol=1e-2)  # not A1111's seed + 1
    assert torch.equal(noise.batch_noise(100, (2, 4, H, W)),
                       torch.randn(2, 4, H, W, generator=torch.Generator().manual_seed(100)))


def test_comfyui_rule_honours_batch_index(sd1):
    whole = noise.batch_noise(5, (4, 4, H, W))
    assert torch.equal(noise.batch_noise(5, (2, 4, H, W), [2, 0]), whole[[2, 0]])
    assert torch.equal(noise.batch_noise(5, (3, 4, H, W), [1, 1, 3]), whole[[1, 1, 3]])
    cut = run(sd1, "euler", latent={"samples": torch.zeros(1, 4, H, W), "batch_index": [1]}, seed=5)
    torch.testing.assert_close(cut[0], run(sd1, "euler", latent=empty(2), seed=5)[1], rtol=1e-5, atol=1e-4)


def test_ancestral_step_noise_follows_the_rule(sd1):
    # ComfyUI: step noise from a generator seeded with seed + 1, one draw of the batch's shape per step
    comfy = [run(sd1, "euler_ancestral", seed=s, steps=3) for s in (8, 9)]
    assert not torch.allclose(comfy[0], comfy[1])
    a1111 = run(sd1, "euler_ancestral", seed=8, steps=3, noise_rule="a1111")
    torch.testing.assert_close(a1111[0], run(sd1, "euler_ancestral", seed=8, steps=3, noise_rule="a1111")[0])
    assert not torch.allclose(a1111, comfy[0], atol=1e-2)  # the same starting noise, other step noise


def test_unknown_noise_rule_is_refused(sd1):
    with pytest.raises(ValueError, match="noise_rule"):
        run(sd1, noise_rule="forge")


def test_seed_wraps_at_2_64():
    assert torch.equal(noise.gaussian(noise.generators(2 ** 64 - 1, 2), (3,))[1],
                       noise.gaussian(noise.generators(0, 1), (3,))[0])


# -- img2img -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["comfyui", "a1111"])
def test_denoise_0_returns_the_input(sd1, rule):
    start = {"samples": torch.randn(2, 4, H, W)}
    assert torch.equal(run(sd1, latent=start, denoise=0.0, noise_rule=rule), start["samples"])


@pytest.mark.parametrize("rule,runs", [("comfyui", 10), ("a1111", 4)])
def test_denoise_steps_follow_the_rule(sd1, rule, runs):
    # ComfyUI: `steps` steps of a schedule for int(10 / 0.3) = 33; A1111: int(0.3 * 10) + 1 of the 10-step one
    calls = []
    run(sd1, latent={"samples": torch.randn(1, 4, H, W)}, steps=10, denoise=0.3, noise_rule=rule,
        progress=lambda step, total, preview: calls.append((step, total)))
    assert calls == [(i, runs) for i in range(1, runs + 1)]
    table = sigmas.DiscreteSchedule(sd1[0].scheduler_config)
    walked, first, total = sampling.run_sigmas(table, "euler", "normal", 10, 0.3, rule)
    full = sampling.schedule(table, "euler", "normal", total)
    assert len(walked) == runs + 1 and torch.equal(walked, full[first:]) and total == (33 if rule == "comfyui" else 10)


# -- inpainting with a noise mask ---------------------------------------------------------------------

@pytest.mark.parametrize("sampler,scheduler", [("euler_ancestral", "normal"), ("dpmpp_2m", "karras"),
                                               ("heun", "normal"), ("ddim", "ddim_uniform"), ("lcm", "normal")])
def test_noise_mask_keeps_the_unmasked_region(sd1, sampler, scheduler):
    start = torch.randn(1, 4, H, W)
    mask = torch.zeros(1, H * 8, W * 8)
    mask[:, :, : W * 4] = 1.0  # denoise the left half (pixel mask, 8-pixel aligned)
    out = run(sd1, sampler, scheduler, latent={"samples": start, "noise_mask": mask}, denoise=0.8)
    assert torch.equal(out[..., W // 2:], start[..., W // 2:])
    assert not torch.allclose(out[..., : W // 2], start[..., : W // 2], atol=1e-2)


# -- inpainting and depth UNets ------------------------------------------------------------------------

def test_inpaint_unet_runs_on_vae_encode_for_inpaint():
    model, clip, vae = tiny_sd1("inpaint")
    pixels = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 16:40] = 1
    latent = vae_codec.encode_for_inpaint(vae, pixels, mask, grow_mask_by=6)
    assert latent["noise_mask"].shape == (1, 1, 64, 64) and latent["noise_mask"].sum() > mask.sum()
    pos, neg = text_encode.encode(clip, PROMPT), text_encode.encode(clip, "")
    out = sampling.sample(model, pos, neg, latent, 1, 3, 7.0, "euler", "normal")["samples"]
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    # outside the (grown) mask the greyed-image latent comes back unchanged
    assert torch.equal(out[..., 6:, :], latent["samples"][..., 6:, :])


def test_depth_unet_uses_the_depth_map():
    model, clip, _ = tiny_sd1("depth")
    neg = text_encode.encode(clip, "")
    results = []
    for depth in (torch.linspace(0, 1, 64).repeat(1, 64, 1), torch.linspace(1, 0, 64).repeat(1, 64, 1)):
        pos = text_encode.encode(clip, PROMPT)
        pos[0].extra["depth"] = depth
        results.append(sampling.sample(model, pos, neg, empty(), 1, 3, 7.0, "euler", "normal")["samples"])
    assert torch.isfinite(results[0]).all() and not torch.allclose(results[0], results[1])
    with pytest.raises(ValueError, match="depth map"):
        sampling.sample(model, text_encode.encode(clip, PROMPT), neg, empty(), 1, 2, 7.0, "euler", "normal")


# -- ControlNet ----------------------------------------------------------------------------------------

def test_controlnet_strength_0_is_no_controlnet_and_nonzero_changes_the_result(sd1):
    _, _, _, pos, neg = sd1
    net, image = tiny_controlnet(), torch.rand(1, 64, 64, 3)
    plain = run(sd1)
    assert torch.equal(run(sd1, positive=control.apply(pos, neg, net, image, 0.0)[0]), plain)
    outside = control.apply(pos, neg, net, image, 1.0, start_percent=0.0, end_percent=0.0)
    assert torch.equal(run(sd1, positive=outside[0], negative=outside[1]), plain)
    cpos, cneg = control.apply(pos, neg, net, image, 1.0)
    assert not torch.allclose(run(sd1, positive=cpos, negative=cneg), plain)
    assert pos[0].controls == []  # applying returns new conditioning


def test_controlnet_image_is_resized_to_the_latent(sd1):
    _, _, _, pos, neg = sd1
    cpos, cneg = control.apply(pos, neg, tiny_controlnet(), torch.rand(2, 100, 50, 3), 1.0)
    out = run(sd1, positive=cpos, negative=cneg, latent={"samples": torch.zeros(3, 4, 8, 12)})
    assert out.shape == (3, 4, 8, 12) and torch.isfinite(out).all()


# -- KSamplerAdvanced ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler,scheduler", [("euler", "normal"), ("ddim", "ddim_uniform"), ("heun", "karras")])
def test_split_with_leftover_noise_equals_one_run(sd1, sampler, scheduler):
    whole = run(sd1, sampler, scheduler, steps=6)
    part = run(sd1, sampler, scheduler, steps=6, end_step=3, return_with_leftover_noise=True)
    rest = run(sd1, sampler, scheduler, latent={"samples": part}, steps=6, start_step=3, add_noise=False)
    assert (rest - whole).abs().max() < 1e-3 * whole.abs().max()


def test_empty_step_range_returns_the_input(sd1):
    start = {"samples": torch.randn(1, 4, H, W)}
    assert torch.equal(run(sd1, latent=start, start_step=5, end_step=5), start["samples"])


# -- interrupt and progress ------------------------------------------------------------------------------

def test_interrupt_mid_sampling_raises_interrupted(sd1):
    model, _, _, pos, neg = sd1
    seen = []
    ctx = NodeContext(on_progress=lambda value, total, preview: seen.append(value), is_interrupted=lambda: bool(seen))
    with pytest.raises(Interrupted):
        KSampler(ctx).run(model, 1, 10, 7.0, "euler", "normal", pos, neg, empty(), 1.0)
    assert seen == [1]


def test_progress_reports_each_step_with_a_preview(sd1):
    model, _, _, pos, neg = sd1
    events = []
    ctx = NodeContext(on_progress=lambda value, total, preview: events.append((value, total, preview)))
    KSamplerAdvanced(ctx).run(model, "enable", 1, 8, 7.0, "heun", "karras", pos, neg, empty(2), 2, 6, "enable")
    assert [(value, total) for value, total, _ in events] == [(i, 4) for i in range(1, 5)]
    assert all(isinstance(p, Image.Image) and p.size == (W, H) and p.mode == "RGB" for _, _, p in events)


# -- every sampler and scheduler ---------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs(sd1, sampler):
    assert torch.isfinite(run(sd1, sampler, "karras", steps=3)).all()


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_scheduler_runs(sd1, scheduler):
    for steps in (1, 3):
        assert torch.isfinite(run(sd1, "dpmpp_2m", scheduler, steps=steps)).all()


def test_unknown_and_unavailable_samplers_are_refused_with_the_known_names(sd1):
    with pytest.raises(ValueError, match="unknown sampler 'nope'.*known: euler, euler_cfg_pp"):
        run(sd1, "nope")
    with pytest.raises(ValueError, match="sa_solver.*not implemented"):
        run(sd1, "sa_solver")
    with pytest.raises(ValueError, match="unknown scheduler 'nope'.*known: simple"):
        run(sd1, "euler", "nope")


def test_a1111_rules_call_the_unet_between_trained_timesteps_and_comfyuis_at_the_nearest(sd1):
    """A1111's k-diffusion wrapper runs unquantized: a sigma between two trained ones gets the timestep
    between them; ComfyUI rounds to the nearest trained timestep."""
    model = sd1[0]
    seen: list[float] = []
    hook = model.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.extend(float(t) for t in torch.as_tensor(args[1]).reshape(-1)),
        with_kwargs=True)
    try:
        comfy = run(sd1, "euler", "karras", noise_rule="comfyui")
        comfy_steps, seen[:] = list(seen), []
        a1111 = run(sd1, "euler", "karras", noise_rule="a1111")
    finally:
        hook.remove()
    assert comfy_steps and all(t == round(t) for t in comfy_steps)
    assert any(abs(t - round(t)) > 1e-3 for t in seen)  # karras sigmas fall between trained ones
    table = sigmas.DiscreteSchedule(model.scheduler_config)
    schedule = sampling.schedule(table, "euler", "karras", 4)[:-1]
    torch.testing.assert_close(table.sigma(torch.tensor(sorted(set(seen), reverse=True))), schedule,
                               rtol=1e-4, atol=1e-5)  # each timestep is its sigma's, read back
    assert not torch.allclose(comfy, a1111)
