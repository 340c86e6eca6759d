"""The sampling loop against diffusers' own pipelines, and what it promises: seeds, img2img, inpainting,
inpaint/depth UNets, ControlNet, KSamplerAdvanced splits, interrupts, previews."""
import dataclasses

import pytest
import torch
from diffusers import (StableDiffusionControlNetPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline,
                       StableDiffusionXLPipeline)
from PIL import Image

from inkwash.nodes.core.sampling import KSampler, KSamplerAdvanced
from inkwash.nodes.declare import Interrupted, NodeContext
from inkwash.nodes.runtime import control, noise, sampling, schedulers, text_encode, vae_codec
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


def pipeline(cls, model, clip, vae, sampler, scheduler, **components):
    pipe = cls(vae=vae.vae, text_encoder=clip.encoders[0], tokenizer=clip.tokenizers[0], unet=model.unet,
               scheduler=schedulers.build(model.scheduler_config, sampler, scheduler), safety_checker=None,
               feature_extractor=None, requires_safety_checker=False, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- same numbers as diffusers' pipelines ---------------------------------------------------------------

PARITY = [("euler", "normal"), ("euler_ancestral", "normal"), ("dpmpp_2m", "karras"), ("ddim", "ddim_uniform"),
          ("heun", "karras"), ("dpmpp_2m_sde", "exponential"), ("uni_pc", "simple"), ("lcm", "sgm_uniform")]


@pytest.mark.parametrize("sampler,scheduler", PARITY)
def test_txt2img_matches_diffusers_pipeline(sd1, sampler, scheduler):
    model, clip, vae, _, _ = sd1
    ours = vae_codec.decode(vae, run(sd1, sampler, scheduler, latent=empty(2)))
    gens = noise.generators(42, 2)
    pipe = pipeline(StableDiffusionPipeline, model, clip, vae, sampler, scheduler)
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, height=H * 8, width=W * 8, num_inference_steps=4,
                  guidance_scale=7.0, num_images_per_prompt=2, generator=gens, latents=noise.gaussian(gens, (4, H, W)),
                  output_type="pt").images
    assert (ours - theirs.movedim(1, -1)).abs().max() < 1e-4


def test_img2img_matches_diffusers_pipeline(sd1):
    model, clip, vae, _, _ = sd1
    start = {"samples": torch.randn(1, 4, H, W, generator=torch.Generator().manual_seed(5))}
    ours = run(sd1, "dpmpp_2m", "karras", latent=start, steps=10, denoise=0.5)
    pipe = pipeline(StableDiffusionImg2ImgPipeline, model, clip, vae, "dpmpp_2m", "karras")
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, image=start["samples"], strength=0.5, num_inference_steps=10,
                  guidance_scale=7.0, generator=noise.generators(42, 1), output_type="latent").images
    assert (ours - theirs).abs().max() < 1e-4


def test_controlnet_matches_diffusers_pipeline(sd1):
    model, clip, vae, pos, neg = sd1
    net = tiny_controlnet()
    hint = torch.rand(1, H * 8, W * 8, 3, generator=torch.Generator().manual_seed(3))
    pos, neg = control.apply(pos, neg, net, hint, 0.7, 0.0, 0.5)
    ours = run(sd1, positive=pos, negative=neg)
    gens = noise.generators(42, 1)
    pipe = pipeline(StableDiffusionControlNetPipeline, model, clip, vae, "euler", "normal", controlnet=net.model)
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, image=hint.movedim(-1, 1), height=H * 8, width=W * 8,
                  num_inference_steps=4, guidance_scale=7.0, generator=gens, latents=noise.gaussian(gens, (4, H, W)),
                  controlnet_conditioning_scale=0.7, control_guidance_start=0.0, control_guidance_end=0.5,
                  output_type="latent").images
    assert (ours - theirs).abs().max() < 1e-4


def test_sdxl_matches_diffusers_pipeline():
    model, clip, vae = tiny_sdxl()
    pos, neg = text_encode.encode(clip, PROMPT), text_encode.encode(clip, NEGATIVE)
    assert pos[0].embeds.shape == (1, 77, 64) and pos[0].pooled.shape == (1, 32)
    ours = sampling.sample(model, pos, neg, empty(), 7, 3, 5.0, "euler", "normal")["samples"]
    gens = noise.generators(7, 1)
    pipe = StableDiffusionXLPipeline(vae=vae.vae, text_encoder=clip.encoders[0], text_encoder_2=clip.encoders[1],
                                     tokenizer=clip.tokenizers[0], tokenizer_2=clip.tokenizers[1], unet=model.unet,
                                     scheduler=schedulers.build(model.scheduler_config, "euler", "normal"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, height=H * 8, width=W * 8, num_inference_steps=3,
                  guidance_scale=5.0, generator=gens, latents=noise.gaussian(gens, (4, H, W)),
                  output_type="latent").images
    assert (ours - theirs).abs().max() < 1e-4


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


# -- seeds ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde"])  # both add noise at every step
def test_same_seed_same_result_and_batch_images_match_their_seed_alone(sd1, sampler):
    batch = run(sd1, sampler, latent=empty(3), seed=100)
    assert torch.equal(batch, run(sd1, sampler, latent=empty(3), seed=100))
    for i in range(3):
        alone = run(sd1, sampler, seed=100 + i)
        # a batch runs other BLAS kernels than one image: float32 rounding, relative to latents of ~30
        torch.testing.assert_close(batch[i], alone[0], rtol=1e-5, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1])


def test_seed_wraps_at_2_64():
    assert torch.equal(noise.gaussian(noise.generators(2 ** 64 - 1, 2), (3,))[1],
                       noise.gaussian(noise.generators(0, 1), (3,))[0])


# -- img2img -------------------------------------------------------------------------------------------

def test_denoise_0_returns_the_input(sd1):
    start = {"samples": torch.randn(2, 4, H, W)}
    assert torch.equal(run(sd1, latent=start, denoise=0.0), start["samples"])


def test_denoise_runs_the_last_steps_only(sd1):
    calls = []
    run(sd1, latent={"samples": torch.randn(1, 4, H, W)}, steps=10, denoise=0.3,
        progress=lambda step, total, preview: calls.append((step, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


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


def test_stopping_early_without_leftover_noise_ends_on_the_clean_prediction(sd1):
    # as ComfyUI's force_full_denoise: the last step goes down to sigma 0
    model, clip, vae, _, _ = sd1
    ours = run(sd1, "euler", "normal", steps=6, end_step=3)
    sched = schedulers.build(model.scheduler_config, "euler", "normal")
    sched.set_timesteps(6)
    gens = noise.generators(42, 1)
    pipe = pipeline(StableDiffusionPipeline, model, clip, vae, "euler", "normal")
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, height=H * 8, width=W * 8, sigmas=sched.sigmas[:3].tolist() + [0.0],
                  guidance_scale=7.0, generator=gens, latents=noise.gaussian(gens, (4, H, W)),
                  output_type="latent").images
    assert (ours - theirs).abs().max() < 1e-3 * theirs.abs().max()


def test_empty_step_range_returns_the_input(sd1):
    start = {"samples": torch.randn(1, 4, H, W)}
    assert torch.equal(run(sd1, latent=start, start_step=5, end_step=5), start["samples"])


def test_predicted_x0_for_schedulers_that_do_not_report_it():
    for prediction_type in ("epsilon", "v_prediction"):
        sched = schedulers.build({**tiny_sd1()[0].scheduler_config, "prediction_type": prediction_type},
                                 "dpmpp_2m", "karras")
        sched.set_timesteps(5)
        x0, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
        sigma = float(sched.sigmas[2])
        alpha, sigma_vp = (1 + sigma ** 2) ** -0.5, sigma * (1 + sigma ** 2) ** -0.5
        x = alpha * x0 + sigma_vp * eps
        prediction = eps if prediction_type == "epsilon" else alpha * eps - sigma_vp * x0
        assert torch.allclose(sampling._predicted_x0(sched, object(), prediction, x, 2), x0, atol=1e-5)


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


# -- every sampler x scheduler ------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", schedulers.SAMPLER_NAMES)
def test_every_sampler_and_scheduler_runs(sd1, sampler):
    for scheduler in schedulers.SCHEDULER_NAMES:
        out = run(sd1, sampler, scheduler, steps=2)
        assert torch.isfinite(out).all(), (sampler, scheduler)
