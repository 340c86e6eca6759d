"""Prompt encoding (chunks, clip skip, SDXL, weights) and sampler/scheduler names."""
import pytest
import torch

from inkwash.nodes.core.conditioning import CLIPSetLastLayer, CLIPTextEncode
from inkwash.nodes.formats import sampler_names
from inkwash.nodes.runtime import sampling, sigmas, text_encode
from tiny_models import tiny_sd1, tiny_sd2, tiny_sdxl

# diffusers' schedulers call np.array() on tensors, which numpy 2 deprecates


@pytest.fixture(scope="module")
def clip():
    return tiny_sd1()[1]


def reference(clip, ids, hidden_layer=None):
    """What diffusers' encode_prompt computes for one 77-token window."""
    encoder = clip.encoders[0]
    with torch.no_grad():
        out = encoder(torch.tensor([ids]), output_hidden_states=True)
        if hidden_layer is None:
            return out[0]
        return encoder.final_layer_norm(out.hidden_states[hidden_layer])


def test_short_prompt_is_one_window_like_diffusers(clip):
    tokenizer = clip.tokenizers[0]
    ids = tokenizer("a photo of a cat", padding="max_length", max_length=77, truncation=True).input_ids
    cond, = text_encode.encode(clip, "a photo of a cat")
    assert cond.pooled is None and cond.controls == []
    assert torch.allclose(cond.embeds, reference(clip, ids), atol=1e-6)


def test_long_prompt_is_encoded_in_75_token_chunks(clip):
    text = " ".join(["cat"] * 100)
    cond, = text_encode.encode(clip, text)
    assert cond.embeds.shape == (1, 154, 32)
    tokenizer = clip.tokenizers[0]
    cat = tokenizer("cat", add_special_tokens=False).input_ids[0]
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    first = [start] + [cat] * 75 + [end]
    second = [start] + [cat] * 25 + [end] + [tokenizer.pad_token_id] * 50
    assert torch.allclose(cond.embeds[:, :77], reference(clip, first), atol=1e-6)
    assert torch.allclose(cond.embeds[:, 77:], reference(clip, second), atol=1e-6)


def test_empty_prompt_is_one_window(clip):
    assert text_encode.encode(clip, "")[0].embeds.shape == (1, 77, 32)


def test_clip_skip_takes_an_earlier_layer_through_the_final_norm(clip):
    ids = clip.tokenizers[0]("a cat", padding="max_length", max_length=77).input_ids
    skipped = CLIPSetLastLayer().run(clip, -2)[0]
    assert clip.stop_at_clip_layer == -1 and skipped.stop_at_clip_layer == -2
    cond, = CLIPTextEncode().run("a cat", skipped)[0]
    assert torch.allclose(cond.embeds, reference(clip, ids, hidden_layer=-2), atol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        text_encode.encode(CLIPSetLastLayer().run(clip, -24)[0], "a cat")


def test_sd2_pads_with_zero():
    clip = tiny_sd2()[1]
    ids = clip.tokenizers[0]("a cat", padding="max_length", max_length=77).input_ids
    assert ids[-1] == 0
    assert torch.allclose(text_encode.encode(clip, "a cat")[0].embeds, reference(clip, ids), atol=1e-6)


def test_sdxl_concatenates_penultimate_layers_and_pools_clip_g():
    clip = tiny_sdxl()[1]
    cond, = text_encode.encode(clip, "a cat")
    ids = [t("a cat", padding="max_length", max_length=77).input_ids for t in clip.tokenizers]
    with torch.no_grad():
        clip_l = clip.encoders[0](torch.tensor([ids[0]]), output_hidden_states=True).hidden_states[-2]
        clip_g = clip.encoders[1](torch.tensor([ids[1]]), output_hidden_states=True)
    assert torch.allclose(cond.embeds, torch.cat([clip_l, clip_g.hidden_states[-2]], dim=-1), atol=1e-6)
    assert torch.allclose(cond.pooled, clip_g.text_embeds, atol=1e-6)


def test_weighted_segments_scale_their_tokens(clip):
    plain, = text_encode.encode_segments(clip, [("a cat", 1.0), ("in snow", 1.0)])
    weighted, = text_encode.encode_segments(clip, [("a cat", 1.0), ("in snow", 1.5)])
    assert torch.allclose(weighted.embeds.mean(), plain.embeds.mean(), atol=1e-5)
    assert not torch.allclose(weighted.embeds, plain.embeds)


# -- sampler and scheduler names --------------------------------------------------------------------------

def test_name_lists_follow_comfyui():
    assert sampler_names.SAMPLER_NAMES[:6] == ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp",
                                               "heun", "heunpp2"]
    for name in ("dpmpp_2s_ancestral", "ddpm", "dpmpp_3m_sde", "res_multistep", "er_sde", "seeds_3", "ddim",
                 "uni_pc", "uni_pc_bh2", "lcm", "deis", "ipndm_v", "dpm_adaptive"):
        assert name in sampler_names.SAMPLER_NAMES
    assert sampler_names.SCHEDULER_NAMES == ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform",
                                             "beta", "normal", "linear_quadratic", "kl_optimal"]


@pytest.mark.parametrize("a1111,expected", [
    (("Euler a",), ("euler_ancestral", "normal")),
    (("DPM++ 2M", "Karras"), ("dpmpp_2m", "karras")),
    (("DPM++ 2M Karras",), ("dpmpp_2m", "karras")),
    (("DPM++ 2M",), ("dpmpp_2m", "karras")),  # A1111's "Automatic" schedule for DPM++ 2M
    (("DPM++ 2M", "Automatic"), ("dpmpp_2m", "karras")),
    (("DPM++ 2M SDE", "Exponential"), ("dpmpp_2m_sde", "exponential")),
    (("DPM++ SDE Karras",), ("dpmpp_sde", "karras")),
    (("k_euler_a",), ("euler_ancestral", "normal")),
    (("DDIM",), ("ddim", "ddim_uniform")),
    (("Euler", "SGM Uniform"), ("euler", "sgm_uniform")),
    (("DPM++ 2S a Karras",), ("dpmpp_2s_ancestral", "karras")),
    (("DPM++ 2S a",), ("dpmpp_2s_ancestral", "karras")),
    (("DPM++ 2M SDE Heun",), ("dpmpp_2m_sde_heun", "exponential")),
    (("DPM++ 3M SDE Karras",), ("dpmpp_3m_sde", "karras")),
    (("LMS Karras",), ("lms", "karras")),
    (("DPM fast",), ("dpm_fast", "normal")),
    (("k_dpm_ad",), ("dpm_adaptive", "normal")),
    (("Restart",), ("restart", "karras")),
    (("DDIM CFG++",), ("euler_cfg_pp", "ddim_uniform")),
    (("PLMS",), ("ipndm", "ddim_uniform")),
    (("UniPC",), ("uni_pc", "normal")),
    (("Euler", "Polyexponential"), ("euler", "exponential")),
    (("Euler", "KL Optimal"), ("euler", "kl_optimal")),
])
def test_a1111_names(a1111, expected):
    assert sampler_names.from_a1111(*a1111) == expected


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unsupported A1111 sampler 'Nope'; supported: .*Euler a"):
        sampler_names.from_a1111("Nope")
    with pytest.raises(ValueError, match="unsupported A1111 schedule type 'Align Your Steps'; supported: Automatic"):
        sampler_names.from_a1111("Euler", "Align Your Steps")
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        sampler_names.check_sampler("nope")
    with pytest.raises(ValueError, match="unknown scheduler 'nope'"):
        sigmas.build(sigmas.DiscreteSchedule({}), "nope", 4)


def test_noise_levels_come_from_the_model_config():
    sd = sigmas.DiscreteSchedule(tiny_sd1()[0].scheduler_config)
    assert sd.sigma_min == pytest.approx(0.0292, abs=1e-4) and sd.sigma_max == pytest.approx(14.6146, abs=1e-4)
    zsnr = sigmas.DiscreteSchedule({**tiny_sd1()[0].scheduler_config, "rescale_betas_zero_snr": True})
    assert zsnr.sigma_max > 4000 and zsnr.sigma_min == pytest.approx(sd.sigma_min)  # only the end moves
    linear = sigmas.DiscreteSchedule({"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02})
    assert linear.sigma_max > 150
    # the UNet is called at the trained timestep nearest in log sigma
    assert float(sd.timestep(sd.sigmas[500] * 1.0001)) == 500.0 and float(sd.timestep(100.0)) == 999.0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoiser_turns_the_prediction_into_the_clean_latent(prediction_type):
    table = sigmas.DiscreteSchedule({**tiny_sd1()[0].scheduler_config, "prediction_type": prediction_type})
    denoiser = sampling.Denoiser(None, None, 1.0, {}, table, torch.tensor([3.0, 0.0]), 0, 1, None, None, None)
    x0, eps, sigma = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), 3.0
    alpha, sigma_vp = (1 + sigma ** 2) ** -0.5, sigma * (1 + sigma ** 2) ** -0.5
    prediction = eps if prediction_type == "epsilon" else alpha * eps - sigma_vp * x0
    torch.testing.assert_close(denoiser._to_clean(x0 + sigma * eps, prediction, sigma), x0)
