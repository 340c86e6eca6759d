"""Prompt encoding (chunks, clip skip, SDXL, weights) and sampler/scheduler names."""
import pytest
import torch

from inkwash.nodes.core.conditioning import CLIPSetLastLayer, CLIPTextEncode
from inkwash.nodes.formats import sampler_names
from inkwash.nodes.runtime import schedulers, text_encode
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
    assert sampler_names.SAMPLER_NAMES[:6] == ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms"]
    for name in ("dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "ddim", "uni_pc", "lcm"):
        assert name in sampler_names.SAMPLER_NAMES
    assert set(sampler_names.SCHEDULER_NAMES) == {"normal", "karras", "exponential", "sgm_uniform", "simple",
                                               "ddim_uniform", "beta"}


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
])
def test_a1111_names(a1111, expected):
    assert sampler_names.from_a1111(*a1111) == expected


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="PLMS"):
        sampler_names.from_a1111("PLMS")
    with pytest.raises(ValueError, match="unknown sampler"):
        schedulers.build({}, "nope", "normal")
    with pytest.raises(ValueError, match="unknown scheduler"):
        schedulers.build({}, "euler", "nope")


def test_scheduler_is_built_from_the_model_config():
    config = {**tiny_sd1()[0].scheduler_config, "prediction_type": "v_prediction"}
    built = schedulers.build(config, "dpmpp_2m", "karras")
    assert built.config.prediction_type == "v_prediction"
    assert built.config.beta_schedule == "scaled_linear" and built.config.use_karras_sigmas
    assert built.config.timestep_spacing == "linspace"


def test_euler_ancestral_gets_karras_sigmas():
    config = tiny_sd1()[0].scheduler_config
    shaped, euler = schedulers.build(config, "euler_ancestral", "karras"), schedulers.build(config, "euler", "karras")
    shaped.set_timesteps(6)
    euler.set_timesteps(6)
    assert torch.equal(shaped.sigmas, euler.sigmas) and torch.equal(shaped.timesteps, euler.timesteps)


def test_ddim_on_sigma_shaped_schedules_runs_as_euler():
    config = tiny_sd1()[0].scheduler_config
    assert type(schedulers.build(config, "ddim", "ddim_uniform")).__name__ == "DDIMScheduler"
    assert type(schedulers.build(config, "ddim", "karras")).__name__ == "EulerDiscreteScheduler"
