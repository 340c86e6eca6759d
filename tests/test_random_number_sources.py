"""Random numbers as the programs people bring their seeds from draw them: an NVIDIA GPU's torch.randn
drawn on the CPU by Philox (A1111's NV and GPU sources, ComfyUI's step noise and *_gpu Brownian trees on a
GPU), A1111's CPU source and its eta noise seed delta, from the sampler node through the tabs' parameters,
the A1111 API's settings and the infotext, both ways."""
import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from inkwash.nodes.core import conditioning, latent, sampling
from inkwash.nodes.formats.png_metadata import infotext_from_workflow, parse_infotext
from inkwash.nodes.runtime import noise, philox
from inkwash.webui import generation
from inkwash.webui.generation_passes import HIRES_SAMPLER, REFINER_SAMPLER
from inkwash.webui.parameters import GenerationParams
from inkwash.webui.tabs import pnginfo
from tiny_models import tiny_sd1

from test_a1111_api import SMALL, client, ctx  # noqa: F401  (the A1111 API fixtures on the tiny checkpoint)


# -- the numbers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("counter, key, expected", [
    # Random123's known-answer vectors for Philox4x32-10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_gives_the_published_known_answers(counter, key, expected):
    words = philox.philox4x32(np.array(counter, dtype=np.uint64)[:, None], np.array(key, dtype=np.uint64)[:, None])
    assert tuple(int(w) for w in words[:, 0]) == expected


def test_a_philox_generator_draws_what_torch_draws_on_an_nvidia_gpu():
    # torch.manual_seed(0); torch.randn(3, 4, device="cuda") on NVIDIA cards (A1111's rng_philox documents
    # the same twelve values)
    cuda = torch.tensor([[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                         [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                         [-1.07454231, -0.36314407, -1.67105067, 2.26550497]])
    generator = philox.PhiloxGenerator(0)
    first = generator.randn((3, 4))
    assert first.dtype == torch.float32 and first.shape == (3, 4)
    torch.testing.assert_close(first, cuda, rtol=0, atol=2e-6)
    second = generator.randn((3, 4))  # a second draw moves the counter on, as a CUDA generator's offset
    assert not torch.allclose(first, second)
    assert torch.equal(philox.PhiloxGenerator(0).randn((3, 4)), first)  # the same seed, the same numbers
    assert not torch.allclose(philox.PhiloxGenerator(2 ** 32).randn((3, 4)), first)  # the seed's high word counts
    big = philox.PhiloxGenerator(7).randn((4, 64, 64))
    assert abs(float(big.mean())) < 0.03 and abs(float(big.std()) - 1) < 0.03
    # a draw larger than one working chunk: value i is still Philox's counter (0, 0, i, 0) under the seed
    wide = philox.PhiloxGenerator(5).randn((4, 300, 300)).reshape(-1)
    index = np.array([0, 262143, 262144, 359999], dtype=np.uint64)
    counter = np.zeros((4, len(index)), dtype=np.uint64)
    counter[2] = index
    words = philox.philox4x32(counter, np.array([[5], [0]], dtype=np.uint64).repeat(len(index), axis=1))
    assert torch.equal(wide[index.astype(np.int64)], torch.from_numpy(philox._box_muller_first(words[0], words[1])))


@pytest.mark.parametrize("rule, draws", [("a1111", lambda seed: torch.Generator().manual_seed(seed)),
                                         ("a1111_nv", philox.PhiloxGenerator)])
def test_a1111_rules_draw_each_image_from_its_seed_and_the_delta_moves_only_step_noise(rule, draws):
    shape = (3, 4, 8, 8)

    def randn(generator, size):
        if isinstance(generator, torch.Generator):
            return torch.randn(size, generator=generator)
        return generator.randn(size)

    plain = noise.SeededNoise(rule, 40, shape)
    delta = noise.SeededNoise(rule, 40, shape, seed_delta=31337)
    for i in range(3):
        assert torch.equal(plain.initial[i], randn(draws(40 + i), shape[1:]))
    # the starting noise is the seed's either way; the step noise continues each image's generator, or
    # comes from seed + i + delta
    assert torch.equal(delta.initial, plain.initial)
    plain_step = plain.step_noise("randn", torch.tensor([1.0, 0.0]), "cpu")(1.0, 0.0)
    delta_step = delta.step_noise("randn", torch.tensor([1.0, 0.0]), "cpu")(1.0, 0.0)
    for i in range(3):
        continued = draws(40 + i)
        randn(continued, shape[1:])
        assert torch.equal(plain_step[i], randn(continued, shape[1:]))
        assert torch.equal(delta_step[i], randn(draws(40 + i + 31337), shape[1:]))


def test_comfyui_nv_keeps_comfyuis_starting_noise_and_draws_step_noise_as_its_gpu_generator():
    shape = (2, 4, 8, 8)
    cpu, gpu = noise.SeededNoise("comfyui", 9, shape), noise.SeededNoise("comfyui_nv", 9, shape)
    assert torch.equal(gpu.initial, cpu.initial)  # ComfyUI draws the starting noise on the CPU everywhere
    step = gpu.step_noise("randn", torch.tensor([1.0, 0.0]), "cpu")
    generator = philox.PhiloxGenerator(9)  # ComfyUI's default_noise_sampler on a GPU: seeded with the seed itself
    for _ in range(3):
        assert torch.equal(step(1.0, 0.5), generator.randn(shape))


def test_nvidia_brownian_trees_draw_philox_numbers_only_where_asked():
    from torchsde._brownian import brownian_interval

    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    with noise._tree_draws(True):
        routed = brownian_interval._randn((2, 3), torch.float32, torch.device("cpu"), 1234)
    assert torch.equal(routed, philox.PhiloxGenerator(1234).randn((2, 3)))
    assert not torch.equal(brownian_interval._randn((2, 3), torch.float32, torch.device("cpu"), 1234), routed)

    def first_increment(rule, kind):
        return noise.SeededNoise(rule, 5, (1, 4, 8, 8)).step_noise(kind, sigmas, "cpu")(10.0, 5.0)

    # ComfyUI builds the tree on the CPU for dpmpp_2m_sde and on the GPU for dpmpp_2m_sde_gpu
    assert torch.equal(first_increment("comfyui_nv", "brownian"), first_increment("comfyui", "brownian"))
    on_gpu = first_increment("comfyui_nv", "brownian_gpu")
    assert not torch.allclose(on_gpu, first_increment("comfyui", "brownian_gpu"))
    assert torch.equal(on_gpu, first_increment("comfyui_nv", "brownian_gpu"))  # the same seed, the same tree
    assert abs(float(on_gpu.std()) - 1) < 0.25  # still unit-variance increments
    # A1111 on a GPU builds every tree there
    assert not torch.allclose(first_increment("a1111_nv", "brownian"), first_increment("a1111", "brownian"))


def test_the_nv_rule_is_not_the_cpu_rule_and_an_unknown_rule_is_refused():
    assert not torch.allclose(noise.SeededNoise("a1111_nv", 1, (1, 4, 8, 8)).initial,
                              noise.SeededNoise("a1111", 1, (1, 4, 8, 8)).initial)
    with pytest.raises(ValueError, match="a1111_nv"):
        noise.SeededNoise("a1111_gpu", 1, (1, 4, 8, 8))


# -- the sampler node --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    """The tiny SD1 model with a prompt and an empty negative, encoded once for the sampler tests."""
    model, clip, _ = tiny_sd1()
    encode = conditioning.CLIPTextEncode().run
    return model, encode("a cube", clip)[0], encode("", clip)[0]


def test_the_seed_delta_changes_ancestral_samplers_only_and_nv_images_do_not_depend_on_their_batch(tiny_model):
    model, positive, negative = tiny_model
    two, one = latent.EmptyLatentImage().run(64, 64, 2)[0], latent.EmptyLatentImage().run(64, 64, 1)[0]
    run = sampling.KSampler().run

    def sample(sampler, batch, seed=3, delta=0, rule="a1111_nv"):
        return run(model, seed, 3, 7.0, sampler, "normal", positive, negative, batch, 1.0, rule, delta)[0]["samples"]

    ancestral = sample("euler_ancestral", two)
    assert torch.equal(sample("euler", two, delta=31337), sample("euler", two))  # no step noise to move
    moved = sample("euler_ancestral", two, delta=31337)
    assert not torch.allclose(moved, ancestral, atol=1e-3)
    torch.testing.assert_close(ancestral[1], sample("euler_ancestral", one, seed=4)[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(moved[1], sample("euler_ancestral", one, seed=4, delta=31337)[0], rtol=1e-5, atol=1e-4)
    assert not torch.allclose(ancestral, sample("euler_ancestral", two, rule="a1111"), atol=1e-3)
    comfy_gpu = sample("dpmpp_2m_sde_gpu", two, rule="comfyui_nv")
    assert not torch.allclose(comfy_gpu, sample("dpmpp_2m_sde_gpu", two, rule="comfyui"), atol=1e-3)
    torch.testing.assert_close(sample("dpmpp_2m_sde", two, rule="comfyui_nv"), sample("dpmpp_2m_sde", two, rule="comfyui"))


# -- the tabs' parameters, the workflow and the infotext ---------------------------------------------------

def _workflow(**changes):
    params = generation.resolve(GenerationParams(checkpoint="inkwash-demo.safetensors", seed=5, **changes))
    return generation.txt2img_workflow(params)


def test_a1111_default_is_its_gpu_source_and_each_source_reaches_every_sampler():
    assert GenerationParams().randn_source == "GPU" and GenerationParams().eta_noise_seed_delta == 0
    assert _workflow()["3"]["inputs"]["noise_rule"] == "a1111_nv"
    assert _workflow(randn_source="NV")["3"]["inputs"]["noise_rule"] == "a1111_nv"
    cpu = _workflow(randn_source="CPU", eta_noise_seed_delta=31337, enable_hr=True)
    for sampler in ("3", HIRES_SAMPLER):
        assert cpu[sampler]["inputs"]["noise_rule"] == "a1111"
        assert cpu[sampler]["inputs"]["eta_noise_seed_delta"] == 31337
    refined = _workflow(eta_noise_seed_delta=7, refiner_checkpoint="inkwash-demo.safetensors", refiner_switch_at=0.5)
    assert refined[REFINER_SAMPLER]["inputs"]["eta_noise_seed_delta"] == 7
    assert refined[REFINER_SAMPLER]["inputs"]["noise_rule"] == "a1111_nv"


@pytest.mark.parametrize("field, value", [("randn_source", "TPU"), ("randn_source", 1),
                                          ("eta_noise_seed_delta", -1), ("eta_noise_seed_delta", True)])
def test_bad_random_number_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(generation.BadRequest) as refused:
        GenerationParams(**{field: value})
    assert refused.value.field == field


@pytest.mark.parametrize("source, written", [("GPU", "NV"), ("NV", "NV"), ("CPU", "CPU")])
def test_the_infotext_names_the_random_numbers_and_png_info_sends_them_back(source, written):
    workflow = _workflow(randn_source=source, eta_noise_seed_delta=31337)
    text = infotext_from_workflow(workflow, "9")
    parsed = parse_infotext(text)
    assert parsed["RNG"] == written and parsed["ENSD"] == "31337"
    fields = pnginfo.infotext_fields(text)
    assert fields["randn_source"] == written and fields["eta_noise_seed_delta"] == 31337
    # and what those fields build is the same rule again
    assert _workflow(**{k: fields[k] for k in ("randn_source", "eta_noise_seed_delta")})["3"]["inputs"][
        "noise_rule"] == workflow["3"]["inputs"]["noise_rule"]


def test_an_a1111_infotext_without_rng_is_its_gpu_source_and_comfyui_workflows_write_none():
    fields = pnginfo.infotext_fields("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    assert fields["randn_source"] == "GPU" and fields["eta_noise_seed_delta"] == 0
    assert "ENSD" not in parse_infotext(infotext_from_workflow(_workflow(), "9"))
    comfy = _workflow()
    comfy["3"]["inputs"]["noise_rule"] = "comfyui"
    assert "RNG" not in parse_infotext(infotext_from_workflow(comfy, "9"), defaults=False)


# -- the A1111 API -----------------------------------------------------------------------------------------

def test_the_api_takes_rng_and_ensd_from_override_settings_and_options(client, ctx):  # noqa: F811
    assert client.get("/sdapi/v1/options").json()["randn_source"] == "GPU"
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {
        "randn_source": "CPU", "eta_noise_seed_delta": 31337}})
    assert response.status_code == 200
    info = parse_infotext(json.loads(response.json()["info"])["infotexts"][0])
    assert info["RNG"] == "CPU" and info["ENSD"] == "31337"

    assert client.post("/sdapi/v1/options", json={"randn_source": "NV", "eta_noise_seed_delta": 1}).status_code == 200
    options = client.get("/sdapi/v1/options").json()
    assert options["randn_source"] == "NV" and options["eta_noise_seed_delta"] == 1
    saved = json.loads(client.post("/sdapi/v1/txt2img", json=SMALL).json()["info"])["infotexts"][0]
    assert parse_infotext(saved)["RNG"] == "NV" and parse_infotext(saved)["ENSD"] == "1"

    bad = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"randn_source": "TPU"}})
    assert bad.status_code == 422 and "override_settings.randn_source" in bad.text
    refused = client.post("/sdapi/v1/options", json={"eta_noise_seed_delta": -5})
    assert refused.status_code in (400, 422) and "eta_noise_seed_delta" in refused.text
    assert client.get("/sdapi/v1/options").json()["eta_noise_seed_delta"] == 1  # nothing saved from a refusal


def test_a1111_api_images_follow_the_source(client):  # noqa: F811
    def image(**overrides):
        body = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": overrides}).json()
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))))

    gpu = image(randn_source="GPU")
    assert np.array_equal(gpu, image(randn_source="NV"))
    assert not np.array_equal(gpu, image(randn_source="CPU"))
    assert not np.array_equal(gpu, image(randn_source="GPU", eta_noise_seed_delta=31337))  # Euler a: step noise


# -- A1111's variation seed and seed resize ----------------------------------------------------------------

def _a1111_slerp(val, low, high):
    """A1111's processing slerp, as its modules/rng.py writes it (normalised along dim 1 of [C, H, W])."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def _a1111_first(seeds, subseed, strength, shape, resize=None):
    """ImageRNG.first() with A1111's CPU source: torch.manual_seed + torch.randn for the global draws, a
    torch.Generator per image."""
    noise_shape = shape if resize is None else (shape[0], resize[1] // 8, resize[0] // 8)
    images = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(subseed)
        subnoise = torch.randn(noise_shape) if strength else None
        if noise_shape != shape:
            torch.manual_seed(seed)
            noise = torch.randn(noise_shape)
        else:
            noise = torch.randn(shape, generator=generator)
        if subnoise is not None:
            noise = _a1111_slerp(strength, noise, subnoise)
        if noise_shape != shape:
            x = torch.randn(shape, generator=generator)
            dx, dy = (shape[2] - noise_shape[2]) // 2, (shape[1] - noise_shape[1]) // 2
            w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
            h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
            tx, ty = (0 if dx < 0 else dx), (0 if dy < 0 else dy)
            dx, dy = max(-dx, 0), max(-dy, 0)
            x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
            noise = x
        images.append(noise)
    return torch.stack(images)


@pytest.mark.parametrize("strength, resize", [(0.3, None), (1.0, None), (0.0, (48, 96)), (0.5, (96, 48)),
                                              (0.25, (32, 32))])
def test_a_variation_starts_from_a1111s_noise(strength, resize):
    shape = (2, 4, 8, 8)  # 64 x 64 pixels: resize_from both larger and smaller than the image
    variation = {"subseed": 99, "strength": strength, "resize_from": resize}
    got = noise.SeededNoise("a1111", 40, shape, variation=variation).initial
    torch.testing.assert_close(got, _a1111_first([40, 41], 99, strength, shape[1:], resize), rtol=0, atol=1e-6)
    if strength == 1.0:  # every image starts from the variation seed's noise
        torch.testing.assert_close(got[0], got[1], rtol=0, atol=1e-6)
    if strength == 0.0 and resize is None:
        assert torch.equal(got, noise.SeededNoise("a1111", 40, shape).initial)


def test_a_variation_under_nvidia_numbers_and_the_seed_delta_afterwards():
    shape = (1, 4, 8, 8)
    varied = noise.SeededNoise("a1111_nv", 7, shape, seed_delta=5, variation={"subseed": 3, "strength": 1.0})
    torch.testing.assert_close(varied.initial[0], philox.PhiloxGenerator(3).randn(shape[1:]), rtol=0, atol=1e-6)
    step = varied.step_noise("randn", torch.tensor([1.0, 0.0]), "cpu")(1.0, 0.0)
    assert torch.equal(step[0], philox.PhiloxGenerator(12).randn(shape[1:]))  # seed + delta, from its start
    with pytest.raises(ValueError, match="a1111"):
        noise.SeededNoise("comfyui", 7, shape, variation={"subseed": 3, "strength": 0.5})


def test_the_variation_node_reaches_the_sampler_and_comfyuis_rule_refuses_it(tiny_model):
    model, positive, negative = tiny_model
    two = latent.EmptyLatentImage().run(64, 64, 2)[0]
    run = sampling.KSampler().run
    (full,) = sampling.VariationSeed().run(two, 11, 1.0, 0, 0)
    assert full["variation"] == {"subseed": 11, "strength": 1.0, "resize_from": None}
    images = run(model, 3, 2, 7.0, "euler", "normal", positive, negative, full, 1.0, "a1111")[0]["samples"]
    torch.testing.assert_close(images[0], images[1])  # both start from the variation seed's noise
    plain = run(model, 3, 2, 7.0, "euler", "normal", positive, negative, two, 1.0, "a1111")[0]["samples"]
    assert not torch.allclose(plain[0], plain[1], atol=1e-3)
    with pytest.raises(ValueError, match="a1111"):
        run(model, 3, 2, 7.0, "euler", "normal", positive, negative, full, 1.0, "comfyui")
    with pytest.raises(ValueError, match="at least 8"):
        sampling.VariationSeed().run(two, 11, 0.5, 4, 64)


def test_the_tabs_parameters_put_the_variation_before_every_noising_sampler_and_into_the_infotext():
    workflow = _workflow(subseed=1234, subseed_strength=0.3, seed_resize_from_w=96, seed_resize_from_h=64,
                         enable_hr=True)
    for sampler in ("3", HIRES_SAMPLER):  # A1111 gives its hires pass the same variation
        source = workflow[sampler]["inputs"]["latent_image"]
        assert workflow[source[0]]["class_type"] == "VariationSeed"
        assert workflow[source[0]]["inputs"]["subseed"] == 1234
    parsed = parse_infotext(infotext_from_workflow(workflow, "9"))
    assert (parsed["Variation seed"], parsed["Variation seed strength"], parsed["Seed resize from-1"],
            parsed["Seed resize from-2"]) == ("1234", "0.3", "96", "64")
    assert "Seed resize from: 96x64" in infotext_from_workflow(workflow, "9")
    fields = pnginfo.infotext_fields(infotext_from_workflow(workflow, "9"))
    assert (fields["subseed"], fields["subseed_strength"], fields["seed_resize_from_w"],
            fields["seed_resize_from_h"]) == (1234, 0.3, 96, 64)

    refined = _workflow(subseed=5, subseed_strength=0.5, refiner_checkpoint="inkwash-demo.safetensors",
                        refiner_switch_at=0.5)
    assert refined["3"]["inputs"]["latent_image"][0] == "50_3"
    assert refined[REFINER_SAMPLER]["inputs"]["latent_image"] == ["3", 0]  # adds no noise: no variation
    plain = _workflow()
    assert not any(node["class_type"] == "VariationSeed" for node in plain.values())
    assert "Variation seed" not in parse_infotext(infotext_from_workflow(plain, "9"), defaults=False)
    assert generation.resolve(GenerationParams(subseed=-1)).subseed >= 0  # -1: drawn once, as A1111


def test_the_api_runs_variation_seeds_as_a1111(client):  # noqa: F811
    def run(**fields):
        body = client.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Euler", "batch_size": 2,
                                                     **fields}).json()
        pictures = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in body["images"]]
        return pictures, json.loads(body["info"])

    (first, second), info = run(subseed=77, subseed_strength=1.0)
    assert np.array_equal(first, second)  # seeds 42 and 43 both start from seed 77's noise
    assert info["subseed"] == 77 and info["all_subseeds"] == [77, 77] and info["subseed_strength"] == 1.0
    assert parse_infotext(info["infotexts"][1])["Variation seed"] == "77"
    (plain_first, plain_second), plain = run()
    assert not np.array_equal(plain_first, plain_second) and plain["subseed_strength"] == 0
    (resized, _), resized_info = run(seed_resize_from_w=96, seed_resize_from_h=96)
    assert not np.array_equal(resized, plain_first) and resized_info["seed_resize_from_w"] == 96
    assert "Seed resize from: 96x96" in resized_info["infotexts"][0]
    bad = client.post("/sdapi/v1/txt2img", json={**SMALL, "subseed_strength": 1.5})
    assert bad.status_code == 422 and "subseed_strength" in bad.text


@pytest.mark.parametrize("rule", ["a1111", "a1111_nv"])
def test_an_a1111_run_split_in_two_samplers_draws_the_step_noise_of_one_run(rule, tiny_model):
    """A1111 runs its refiner inside the same sampling loop, so the second part's ancestral step noise
    continues the first part's; the split gives the image of the unsplit run."""
    model, positive, negative = tiny_model
    empty = latent.EmptyLatentImage().run(64, 64, 2)[0]
    whole = sampling.KSampler().run(model, 5, 4, 6.0, "euler_ancestral", "karras", positive, negative, empty, 1.0,
                                    rule)[0]["samples"]
    advanced = sampling.KSamplerAdvanced().run
    (first,) = advanced(model, "enable", 5, 4, 6.0, "euler_ancestral", "karras", positive, negative, empty, 0, 2,
                        "enable", rule)
    (second,) = advanced(model, "disable", 5, 4, 6.0, "euler_ancestral", "karras", positive, negative, first, 2,
                         10000, "disable", rule)
    torch.testing.assert_close(second["samples"], whole, rtol=1e-4, atol=1e-4)
