"""The latent, VAE, sampler and ControlNet nodes: ComfyUI's declarations, their runtime, and a graph run."""
import pytest
import torch

from inkwash.nodes.core import conditioning, controlnet, latent, sampling, vae
from inkwash.nodes.declare import Input, Node, Output, Result
from inkwash.nodes.executor import Executor
from inkwash.nodes.runtime import latents, vae_codec
from tiny_models import tiny_controlnet, tiny_sd1


MODULES = (conditioning, controlnet, latent, sampling, vae)


def info(name):
    for module in MODULES:
        if name in module.NODES:
            return module.NODES[name].object_info(name)
    raise KeyError(name)


# -- declarations -----------------------------------------------------------------------------------------

def test_declarations_match_comfyui():
    ksampler = info("KSampler")
    assert ksampler["input_order"]["required"] == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                                   "positive", "negative", "latent_image", "denoise"]
    required = ksampler["input"]["required"]
    assert required["seed"][1] == {"default": 0, "min": 0, "max": 2 ** 64 - 1, "control_after_generate": True}
    assert required["steps"][1] == {"default": 20, "min": 1, "max": 10000}
    assert required["cfg"][1]["default"] == 8.0 and required["cfg"][1]["max"] == 100.0
    assert required["denoise"][1] == {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}
    assert ksampler["output"] == ["LATENT"] and ksampler["category"] == "sampling"

    advanced = info("KSamplerAdvanced")
    assert advanced["input_order"]["required"] == [
        "model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
        "latent_image", "start_at_step", "end_at_step", "return_with_leftover_noise"]
    assert advanced["input"]["required"]["end_at_step"][1]["default"] == 10000
    assert advanced["input"]["required"]["return_with_leftover_noise"][0] == ["disable", "enable"]
    # Inkwash's additions, optional and last so ComfyUI's workflows run unchanged: how the seed becomes noise
    for node in (ksampler, advanced):
        assert node["input_order"]["optional"] == ["noise_rule", "eta_noise_seed_delta"]
        assert node["input"]["optional"]["noise_rule"][0] == ["comfyui", "comfyui_nv", "a1111", "a1111_nv"]
        assert node["input"]["optional"]["noise_rule"][1]["default"] == "comfyui"
        assert node["input"]["optional"]["eta_noise_seed_delta"][1]["default"] == 0

    empty = info("EmptyLatentImage")["input"]["required"]
    assert empty["width"][1] == {"default": 512, "min": 16, "max": 16384, "step": 8}
    assert empty["batch_size"][1] == {"default": 1, "min": 1, "max": 4096}
    assert info("CLIPSetLastLayer")["input"]["required"]["stop_at_clip_layer"][1] == {
        "default": -1, "min": -24, "max": -1, "step": 1}
    assert info("VAEEncodeForInpaint")["input"]["required"]["grow_mask_by"][1] == {
        "default": 6, "min": 0, "max": 64, "step": 1}
    assert info("LatentUpscale")["input_order"]["required"] == ["samples", "upscale_method", "width", "height", "crop"]
    apply = info("ControlNetApplyAdvanced")
    assert apply["output"] == ["CONDITIONING", "CONDITIONING"] and apply["output_name"] == ["positive", "negative"]
    assert apply["input_order"] == {"required": ["positive", "negative", "control_net", "image", "strength",
                                                 "start_percent", "end_percent"], "optional": ["vae"]}
    assert info("CLIPTextEncode")["input"]["required"]["text"] == ["STRING", {"multiline": True,
                                                                              "dynamicPrompts": True}]


# -- latents ----------------------------------------------------------------------------------------------

def test_empty_latent_and_its_size_guard():
    assert latent.EmptyLatentImage().run(100, 64, 3)[0]["samples"].shape == (3, 4, 8, 12)
    message = latent.EmptyLatentImage.check(width=16384, height=16384, batch_size=4096)
    assert "GiB" in message and "limit" in message
    with pytest.raises(ValueError, match="GiB"):
        latent.EmptyLatentImage().run(16384, 16384, 64)
    assert latent.EmptyLatentImage.check(width=16384, height=16384, batch_size=1) is None


@pytest.mark.parametrize("method", latents.UPSCALE_METHODS)
def test_latent_upscale(method):
    start = {"samples": torch.randn(2, 4, 8, 16), "noise_mask": torch.ones(2, 1, 64, 128)}
    out = latent.LatentUpscale().run(start, method, 256, 0, "disabled")[0]
    assert out["samples"].shape == (2, 4, 16, 32) and "noise_mask" in out
    assert latent.LatentUpscale().run(start, method, 128, 128, "center")[0]["samples"].shape == (2, 4, 16, 16)
    assert latent.LatentUpscale().run(start, method, 0, 0, "disabled")[0] is start


def test_bislerp_keeps_vector_length_between_neighbours():
    samples = torch.zeros(1, 2, 1, 2)
    samples[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    samples[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    out = latents.bislerp(samples, 1, 4)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 1, 4), atol=1e-5)  # lerp would dip to 0.71


def test_set_latent_noise_mask():
    out = latent.SetLatentNoiseMask().run({"samples": torch.zeros(1, 4, 8, 8)}, torch.ones(1, 64, 64))[0]
    assert out["noise_mask"].shape == (1, 1, 64, 64)


# -- VAE ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parts():
    return tiny_sd1()


def test_vae_encode_decode_shapes_and_cropping(parts):
    tiny_vae = parts[2]
    pixels = torch.rand(2, 70, 66, 4)  # not multiples of 8, with alpha
    encoded = vae.VAEEncode().run(pixels, tiny_vae)[0]
    assert encoded["samples"].shape == (2, 4, 8, 8)
    assert torch.equal(encoded["samples"], vae.VAEEncode().run(pixels, tiny_vae)[0]["samples"])  # deterministic
    image = vae.VAEDecode().run(encoded, tiny_vae)[0]
    assert image.shape == (2, 64, 64, 3) and 0 <= image.min() and image.max() <= 1


def test_vae_encode_for_inpaint_greys_the_masked_pixels(parts):
    tiny_vae = parts[2]
    pixels, mask = torch.rand(1, 64, 64, 3), torch.zeros(1, 32, 32)
    mask[:, 8:16, 8:16] = 1  # a mask at another resolution is resized to the image
    out = vae.VAEEncodeForInpaint().run(pixels, tiny_vae, mask, 6)[0]
    grey = pixels.clone()
    grey[:, 16:32, 16:32] = 0.5
    assert torch.equal(out["samples"], vae_codec.encode(tiny_vae, grey))
    assert out["noise_mask"].shape == (1, 1, 64, 64)
    assert out["noise_mask"][0, 0, 16:32, 16:32].all() and out["noise_mask"].sum() > 16 * 16
    assert not out["noise_mask"][0, 0, :8].any()
    assert torch.equal(vae.VAEEncodeForInpaint().run(pixels, tiny_vae, mask, 0)[0]["noise_mask"][0, 0, 16:32, 16:32],
                       torch.ones(16, 16))


# -- a whole graph ------------------------------------------------------------------------------------------

class TinyCheckpoint(Node):
    inputs = ()
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    def run(self):
        return tiny_sd1()


class TinyControlNet(Node):
    inputs = ()
    outputs = (Output("CONTROL_NET"),)

    def run(self):
        return (tiny_controlnet(),)


class Collect(Node):
    inputs = (Input("images", "IMAGE"),)
    outputs = ()
    output_node = True

    def run(self, images):
        return Result(ui={"shape": list(images.shape)})


def registry():
    nodes = {"TinyCheckpoint": TinyCheckpoint, "TinyControlNet": TinyControlNet, "Collect": Collect}
    for module in MODULES:
        nodes.update(module.NODES)
    return nodes


WORKFLOW = {
    "1": {"class_type": "TinyCheckpoint", "inputs": {}},
    "2": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a red fox"}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blurry"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
    "6": {"class_type": "TinyControlNet", "inputs": {}},
    "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "8": {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["3", 0], "negative": ["4", 0], "control_net": ["6", 0], "image": ["7", 0],
        "strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}},
    "9": {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["1", 0], "add_noise": "enable", "noise_seed": 5, "steps": 4, "cfg": 6.0,
        "sampler_name": "dpmpp_2m", "scheduler": "karras", "positive": ["8", 0], "negative": ["8", 1],
        "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": 2, "return_with_leftover_noise": "enable"}},
    "10": {"class_type": "LatentUpscale", "inputs": {"samples": ["9", 0], "upscale_method": "bislerp",
                                                     "width": 96, "height": 96, "crop": "disabled"}},
    "11": {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "seed": 5, "steps": 4, "cfg": 6.0, "sampler_name": "euler_ancestral",
        "scheduler": "normal", "positive": ["8", 0], "negative": ["8", 1], "latent_image": ["10", 0],
        "denoise": 0.5}},
    "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}},
    "13": {"class_type": "Collect", "inputs": {"images": ["12", 0]}},
}


def test_graph_runs_and_reports_progress_with_previews():
    events = []
    result = Executor(registry()).execute(WORKFLOW, on_event=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    assert result.outputs["13"]["shape"] == [2, 96, 96, 3]
    progress = [(d["node"], d["value"], d["max"]) for kind, d in events if kind == "progress"]
    # KSampler 11 at denoise 0.5 runs its 4 steps, the last of an 8-step schedule (ComfyUI's rule)
    assert progress == [("9", 1, 2), ("9", 2, 2)] + [("11", i, 4) for i in range(1, 5)]
    assert all(d["preview"] is not None for kind, d in events if kind == "progress")


def test_conditioning_set_depth_feeds_a_depth_unet():
    model, clip, _ = tiny_sd1("depth")
    encode = conditioning.CLIPTextEncode().run
    positive, negative = encode("a cube", clip)[0], encode("", clip)[0]
    depth = torch.linspace(0, 1, 64).repeat(1, 64, 1)[..., None].expand(1, 64, 64, 3)
    (with_depth,) = conditioning.ConditioningSetDepth().run(positive, depth)
    assert "depth" not in positive[0].extra  # a new conditioning, the input is untouched
    empty = latent.EmptyLatentImage().run(64, 64, 1)[0]
    run = sampling.KSampler().run
    first = run(model, 1, 2, 7.0, "euler", "normal", with_depth, negative, empty, 1.0)[0]["samples"]
    (flipped,) = conditioning.ConditioningSetDepth().run(positive, 1 - depth)
    second = run(model, 1, 2, 7.0, "euler", "normal", flipped, negative, empty, 1.0)[0]["samples"]
    assert torch.isfinite(first).all() and not torch.allclose(first, second)


def test_ksampler_noise_rule_input_picks_the_seeds_of_a_batch():
    model, clip, _ = tiny_sd1()
    encode = conditioning.CLIPTextEncode().run
    positive, negative = encode("a cube", clip)[0], encode("", clip)[0]
    two, one = latent.EmptyLatentImage().run(64, 64, 2)[0], latent.EmptyLatentImage().run(64, 64, 1)[0]
    run = sampling.KSampler().run
    comfy = run(model, 3, 2, 7.0, "euler", "normal", positive, negative, two, 1.0)[0]["samples"]
    a1111 = run(model, 3, 2, 7.0, "euler", "normal", positive, negative, two, 1.0, "a1111")[0]["samples"]
    next_seed = run(model, 4, 2, 7.0, "euler", "normal", positive, negative, one, 1.0, "a1111")[0]["samples"]
    torch.testing.assert_close(a1111[1], next_seed[0], rtol=1e-5, atol=1e-4)  # A1111: image 1 is seed + 1
    assert not torch.allclose(comfy[1], a1111[1], atol=1e-2)  # ComfyUI: one draw for the batch
