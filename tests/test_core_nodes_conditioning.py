"""ComfyUI's conditioning arithmetic (Combine, Concat, Average, ZeroOut) and ControlNetApply, on tiny models."""
import logging

import pytest
import torch

from inkwash.nodes.core import conditioning_ops, controlnet
from inkwash.nodes.runtime import control, latents, sampling, text_encode
from inkwash.nodes.runtime.model_types import Cond, ControlHint
from tiny_models import tiny_controlnet, tiny_sd1, tiny_sdxl

N = {**conditioning_ops.NODES, **controlnet.NODES}


def run(name, **inputs):
    return N[name]().run(**inputs)


@pytest.fixture(scope="module")
def sd1(one_thread):
    return tiny_sd1()


@pytest.fixture(scope="module")
def sdxl(one_thread):
    return tiny_sdxl()


def sample(model, positive, negative, cfg=5.0, steps=3, size=32):
    latent = latents.empty(size, size, 1)
    return sampling.sample(model, positive, negative, latent, seed=7, steps=steps, cfg=cfg, sampler_name="euler",
                           scheduler="normal")["samples"]


# -- combine --------------------------------------------------------------------------------------------

def test_combine_is_both_lists_and_the_sampler_averages_them(sd1):
    model, clip, _ = sd1
    fox, owl, empty = (text_encode.encode(clip, t) for t in ("a red fox", "an owl", ""))
    (both,) = run("ConditioningCombine", conditioning_1=fox, conditioning_2=owl)
    assert [c.embeds for c in both] == [fox[0].embeds, owl[0].embeds]
    (same,) = run("ConditioningCombine", conditioning_1=fox, conditioning_2=fox)
    assert torch.allclose(sample(model, same, empty), sample(model, fox, empty), atol=1e-4)  # float rounding of values up to ~40
    combined = sample(model, both, empty)
    (reversed_,) = run("ConditioningCombine", conditioning_1=owl, conditioning_2=fox)
    assert torch.allclose(combined, sample(model, reversed_, empty), atol=1e-4)  # an average: order-free
    assert not torch.allclose(combined, sample(model, fox, empty), atol=1e-3)
    assert not torch.allclose(combined, sample(model, owl, empty), atol=1e-3)


# -- average ----------------------------------------------------------------------------------------------

def test_average_mixes_tokens_and_pools():
    to = [Cond(torch.ones(1, 4, 3), pooled=torch.ones(1, 2), extra={"width": 64})]
    source = [Cond(torch.full((1, 2, 3), 3.0), pooled=torch.full((1, 2), 5.0))]
    (out,) = run("ConditioningAverage", conditioning_to=to, conditioning_from=source, conditioning_to_strength=0.25)
    # from is zero-padded to to's 4 tokens
    assert torch.allclose(out[0].embeds[0, :2], torch.full((2, 3), 0.25 + 2.25))
    assert torch.allclose(out[0].embeds[0, 2:], torch.full((2, 3), 0.25))
    assert torch.allclose(out[0].pooled, torch.full((1, 2), 0.25 + 3.75)) and out[0].extra == {"width": 64}
    (full,) = run("ConditioningAverage", conditioning_to=to, conditioning_from=source, conditioning_to_strength=1.0)
    assert torch.equal(full[0].embeds, to[0].embeds) and to[0].embeds.eq(1).all()  # input untouched

    longer = [Cond(torch.arange(18.0).reshape(1, 6, 3))]
    (cut,) = run("ConditioningAverage", conditioning_to=to, conditioning_from=longer, conditioning_to_strength=0.0)
    assert torch.equal(cut[0].embeds, longer[0].embeds[:, :4])  # from cut to to's token count
    (no_pool,) = run("ConditioningAverage", conditioning_to=[Cond(torch.ones(1, 4, 3))], conditioning_from=source,
                     conditioning_to_strength=0.5)
    assert torch.equal(no_pool[0].pooled, source[0].pooled)  # a Cond without a pool takes from's


def test_average_and_concat_errors_and_warning(caplog):
    to = [Cond(torch.ones(1, 77, 8))]
    with pytest.raises(ValueError, match="conditioning_from is empty"):
        run("ConditioningAverage", conditioning_to=to, conditioning_from=[], conditioning_to_strength=0.5)
    with pytest.raises(ValueError, match="different text encoders"):
        run("ConditioningConcat", conditioning_to=to, conditioning_from=[Cond(torch.ones(1, 77, 16))])
    with caplog.at_level(logging.WARNING):
        run("ConditioningConcat", conditioning_to=to, conditioning_from=[Cond(torch.ones(1, 77, 8))] * 2)
    assert "only the first is used" in caplog.text


# -- concat and zero out ------------------------------------------------------------------------------------

def test_concat_appends_tokens_and_samples_with_a_shorter_negative(sd1):
    model, clip, _ = sd1
    fox, owl, empty = (text_encode.encode(clip, t) for t in ("a red fox", "an owl", ""))
    (joined,) = run("ConditioningConcat", conditioning_to=fox, conditioning_from=owl)
    assert joined[0].embeds.shape == (1, 154, 32)
    assert torch.equal(joined[0].embeds[:, :77], fox[0].embeds) and torch.equal(joined[0].embeds[:, 77:],
                                                                                  owl[0].embeds)
    out = sample(model, joined, empty)
    assert out.shape == (1, 4, 4, 4) and torch.isfinite(out).all()
    assert not torch.allclose(out, sample(model, fox, empty), atol=1e-3)


def test_zero_out_zeroes_embeddings_and_pool_but_keeps_the_rest(sdxl):
    model, clip, _ = sdxl
    prompt = text_encode.encode(clip, "a castle")
    hint = ControlHint(tiny_controlnet(), torch.zeros(1, 8, 8, 3))
    prompt = [Cond(prompt[0].embeds, prompt[0].pooled, [hint], {"width": 2048})]
    (zero,) = run("ConditioningZeroOut", conditioning=prompt)
    assert zero[0].embeds.eq(0).all() and zero[0].pooled.eq(0).all()
    assert zero[0].embeds.shape == prompt[0].embeds.shape and zero[0].controls == [hint]
    assert zero[0].extra == {"width": 2048} and prompt[0].embeds.abs().sum() > 0
    # SDXL sampling with a zeroed negative (a common SDXL workflow pattern)
    plain = [Cond(prompt[0].embeds, prompt[0].pooled)]
    (negative,) = run("ConditioningZeroOut", conditioning=plain)
    out = sample(model, plain, negative, size=32)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, sample(model, plain, text_encode.encode(clip, ""), size=32), atol=1e-4)


# -- ControlNetApply --------------------------------------------------------------------------------------------

def test_controlnet_apply_hint_whole_schedule_flagged_for_the_negative():
    cn, image = tiny_controlnet(), torch.rand(1, 16, 16, 3)
    earlier = ControlHint(cn, image, 0.5, 0.2, 0.8)
    conditioning = [Cond(torch.ones(1, 77, 32), controls=[earlier])]
    (out,) = run("ControlNetApply", conditioning=conditioning, control_net=cn, image=image, strength=0.7)
    assert out[0].controls[0] is earlier and conditioning[0].controls == [earlier]
    hint = out[0].controls[1]
    assert (hint.strength, hint.start_percent, hint.end_percent, hint.apply_to_uncond) == (0.7, 0.0, 1.0, True)
    (unchanged,) = run("ControlNetApply", conditioning=conditioning, control_net=cn, image=image, strength=0.0)
    assert unchanged is conditioning


def test_negatives_without_hints_receive_the_flagged_hints():
    cn, image = tiny_controlnet(), torch.rand(1, 16, 16, 3)
    (positive,) = run("ControlNetApply", conditioning=[Cond(torch.ones(1, 77, 32))], control_net=cn, image=image,
                      strength=1.0)
    negative = [Cond(torch.zeros(1, 77, 32)), Cond(torch.zeros(1, 77, 32))]
    filled = control.with_uncond_hints(positive, negative)
    assert filled[0].controls == positive[0].controls and filled[1].controls == [] and negative[0].controls == []
    # a negative that has its own hints keeps them and gets nothing more
    own = [Cond(torch.zeros(1, 77, 32), controls=[ControlHint(cn, image)])]
    assert control.with_uncond_hints(positive, own) is own
    # ControlNetApplyAdvanced's hints are not flagged
    advanced_pos, advanced_neg = control.apply([Cond(torch.ones(1, 77, 32))], [], cn, image, 1.0)
    assert control.with_uncond_hints(advanced_pos, [Cond(torch.zeros(1, 77, 32))])[0].controls == []


def test_controlnet_apply_changes_sampling(sd1):
    model, clip, _ = sd1
    fox, empty = text_encode.encode(clip, "a red fox"), text_encode.encode(clip, "")
    (guided,) = run("ControlNetApply", conditioning=fox, control_net=tiny_controlnet(),
                    image=torch.rand(1, 32, 32, 3), strength=1.0)
    assert not torch.allclose(sample(model, guided, empty), sample(model, fox, empty), atol=1e-4)


def test_controlnet_apply_guides_the_negative_as_advanced_on_both_does(sd1):
    """ComfyUI's sampler gives ControlNetApply's hint to a negative without hints of its own: the same
    image as ControlNetApplyAdvanced over the whole schedule on both conditionings."""
    model, clip, _ = sd1
    fox, empty = text_encode.encode(clip, "a red fox"), text_encode.encode(clip, "")
    net, image = tiny_controlnet(), torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(5))
    (guided,) = run("ControlNetApply", conditioning=fox, control_net=net, image=image, strength=1.0)
    both = control.apply(fox, empty, net, image, 1.0, 0.0, 1.0)
    only_positive = control.apply(fox, empty, net, image, 1.0, 0.0, 1.0)[0], empty
    ours = sample(model, guided, empty)
    assert torch.allclose(ours, sample(model, *both), atol=1e-5)
    assert not torch.allclose(ours, sample(model, *only_positive), atol=1e-4)


def test_controlnet_apply_declaration_matches_comfyui():
    info = N["ControlNetApply"].object_info("ControlNetApply")
    assert info["input_order"] == {"required": ["conditioning", "control_net", "image", "strength"]}
    assert info["input"]["required"]["strength"][1] == {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
    assert info["output"] == ["CONDITIONING"]
    average = N["ConditioningAverage"].object_info("ConditioningAverage")
    assert average["input_order"]["required"] == ["conditioning_to", "conditioning_from", "conditioning_to_strength"]
    assert average["input"]["required"]["conditioning_to_strength"][1] == {"default": 1.0, "min": 0.0, "max": 1.0,
                                                                           "step": 0.01}


def test_a_shared_style_workflow_with_the_new_nodes_runs(registry, checkpoint, folders):
    from PIL import Image

    from inkwash.nodes.executor import Executor
    from tiny_models import write_tiny_controlnet

    (folders.models_dir / "controlnet").mkdir()
    write_tiny_controlnet(folders.models_dir / "controlnet", "cn.safetensors")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folders.input_dir / "hint.png")
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint.name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red fox"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "in the snow"}},
        "4": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["3", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 0]}},
        "7": {"class_type": "DiffControlNetLoader", "inputs": {"model": ["1", 0],
                                                               "control_net_name": "cn.safetensors"}},
        "8": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "9": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["4", 0], "control_net": ["7", 0],
                                                          "image": ["8", 0], "strength": 0.9}},
        "10": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 2}},
        "11": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["9", 0], "negative": ["6", 0], "latent_image": ["10", 0], "denoise": 1.0}},
        "12": {"class_type": "LatentFromBatch", "inputs": {"samples": ["11", 0], "batch_index": 1, "length": 1}},
        "13": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["12", 0], "vae": ["1", 2], "tile_size": 64,
                                                          "overlap": 16, "temporal_size": 64, "temporal_overlap": 8}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "shared"}},
    }
    result = Executor(registry).execute(workflow)
    assert result.status == "success", result.error
    (saved,) = result.outputs["14"]["images"]
    assert Image.open(folders.output_dir / saved["filename"]).size == (32, 32)
