"""ComfyUI's ConditioningSetArea / SetAreaPercentage / SetMask / SetTimestepRange, sampled on a tiny SD1 model."""
import pytest
import torch

from inkwash.nodes.core import conditioning_ops
from inkwash.nodes.runtime import latents, sampling, text_encode
from tiny_models import tiny_sd1

N = conditioning_ops.NODES
SIZE = 128  # a 16 x 16 latent: room for an area with feathered edges


def run(name, **inputs):
    return N[name]().run(**inputs)[0]


@pytest.fixture(scope="module")
def sd1(one_thread):
    model, clip, _ = tiny_sd1()
    fox, owl, empty = (text_encode.encode(clip, t) for t in ("a red fox", "an owl", ""))
    return model, fox, owl, empty


def sample(model, positive, negative, steps=2):
    return sampling.sample(model, positive, negative, latents.empty(SIZE, SIZE, 1), seed=7, steps=steps, cfg=5.0,
                           sampler_name="euler", scheduler="normal")["samples"]


def area(cond, width, height, x, y, strength=1.0):
    return run("ConditioningSetArea", conditioning=cond, width=width, height=height, x=x, y=y, strength=strength)


def test_an_area_over_the_whole_latent_is_the_plain_cond(sd1):
    model, fox, owl, empty = sd1
    plain = sample(model, fox, empty)
    assert torch.allclose(sample(model, area(fox, SIZE, SIZE, 0, 0), empty), plain, atol=1e-4)
    both = run("ConditioningCombine", conditioning_1=fox, conditioning_2=owl)
    both_areas = run("ConditioningCombine", conditioning_1=area(fox, SIZE, SIZE, 0, 0),
                     conditioning_2=area(owl, SIZE, SIZE, 0, 0))
    assert torch.allclose(sample(model, both_areas, empty), sample(model, both, empty), atol=1e-4)


def test_an_area_blends_by_its_weights_and_leaves_far_cells_to_the_other_cond(sd1):
    model, fox, owl, empty = sd1
    corner = area(owl, 96, 96, 0, 0)  # cells 0..11; its inner edges fade over 8 cells, to 1/8 at row/column 11
    # one euler step from sigma_max returns the denoised latent, which is linear in the predictions
    fox_only, owl_only = sample(model, fox, empty, steps=1), sample(model, corner, empty, steps=1)
    both = sample(model, run("ConditioningCombine", conditioning_1=fox, conditioning_2=corner), empty, steps=1)
    far = (slice(None), slice(None), slice(12, 16), slice(None))
    assert torch.allclose(both[far], fox_only[far], atol=1e-4)
    inside = (slice(None), slice(None), slice(0, 4), slice(0, 4))  # weight 1: the mean of the two
    assert torch.allclose(both[inside], (fox_only[inside] + owl_only[inside]) / 2, atol=1e-4)
    assert not torch.allclose(both[inside], fox_only[inside], atol=1e-3)
    edge = (slice(None), slice(None), 11, 0)  # the area's last row: weight 1/8
    assert torch.allclose(both[edge], (fox_only[edge] + owl_only[edge] / 8) / (1 + 1 / 8), atol=1e-4)


def test_area_strength_weighs_the_area_against_the_other_cond(sd1):
    model, fox, owl, empty = sd1
    fox_only = sample(model, fox, empty, steps=1)
    owl_only = sample(model, area(owl, 96, 96, 0, 0), empty, steps=1)
    strong = sample(model, fox + area(owl, 96, 96, 0, 0, strength=3.0), empty, steps=1)
    cell = (slice(None), slice(None), 0, 0)
    assert torch.allclose(strong[cell], (fox_only[cell] + 3 * owl_only[cell]) / 4, atol=1e-4)


def test_area_percentage_is_the_pixel_area_of_the_same_box(sd1):
    model, fox, owl, empty = sd1
    pixels = fox + area(owl, 64, 64, 32, 32)
    percent = fox + run("ConditioningSetAreaPercentage", conditioning=owl, width=0.5, height=0.5, x=0.25, y=0.25,
                        strength=1.0)
    assert torch.equal(sample(model, percent, empty), sample(model, pixels, empty))
    assert not torch.allclose(sample(model, pixels, empty), sample(model, fox, empty), atol=1e-3)


def test_a_mask_of_ones_is_the_plain_cond_and_a_mask_weighs_cells(sd1):
    model, fox, owl, empty = sd1
    ones = run("ConditioningSetMask", conditioning=fox, mask=torch.ones(SIZE, SIZE), strength=1.0,
               set_cond_area="default")
    assert torch.allclose(sample(model, ones, empty), sample(model, fox, empty), atol=1e-4)
    left = torch.zeros(1, SIZE, SIZE)
    left[:, :, :SIZE // 2] = 1.0
    for mode in ("default", "mask bounds"):
        masked = run("ConditioningSetMask", conditioning=owl, mask=left, strength=1.0, set_cond_area=mode)
        both = sample(model, fox + masked, empty, steps=1)
        fox_only = sample(model, fox, empty, steps=1)
        right = (slice(None), slice(None), slice(None), slice(10, 16))  # mask 0: the fox alone
        assert torch.allclose(both[right], fox_only[right], atol=1e-4), mode
        assert not torch.allclose(both[:, :, :, :6], fox_only[:, :, :, :6], atol=1e-3), mode


def test_timestep_range(sd1):
    model, fox, owl, empty = sd1
    full = run("ConditioningSetTimestepRange", conditioning=fox, start=0.0, end=1.0)
    assert torch.allclose(sample(model, full, empty), sample(model, fox, empty), atol=1e-4)
    never = run("ConditioningSetTimestepRange", conditioning=owl, start=1.0, end=1.0)
    assert torch.allclose(sample(model, fox + never, empty), sample(model, fox, empty), atol=1e-4)
    # a negative outside its range predicts zero noise, as ComfyUI: not the same as the plain negative
    never_negative = run("ConditioningSetTimestepRange", conditioning=empty, start=1.0, end=1.0)
    assert not torch.allclose(sample(model, fox, never_negative), sample(model, fox, empty), atol=1e-3)
    first_half = run("ConditioningSetTimestepRange", conditioning=owl, start=0.0, end=0.5)
    part = sample(model, fox + first_half, empty, steps=4)
    assert not torch.allclose(part, sample(model, fox, empty, steps=4), atol=1e-3)
    assert not torch.allclose(part, sample(model, fox + owl, empty, steps=4), atol=1e-3)


def test_object_info_matches_comfyui():
    def inputs(name):
        return N[name].object_info(name)["input"]["required"]

    info = inputs("ConditioningSetArea")
    assert list(info) == ["conditioning", "width", "height", "x", "y", "strength"]
    assert info["width"] == ["INT", {"default": 64, "min": 64, "max": 16384, "step": 8}]
    assert info["x"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]
    assert info["strength"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]
    info = inputs("ConditioningSetAreaPercentage")
    assert list(info) == ["conditioning", "width", "height", "x", "y", "strength"]
    assert info["width"][1]["default"] == 1.0 and info["x"][1]["default"] == 0 and info["y"][1]["max"] == 1.0
    info = inputs("ConditioningSetMask")
    assert list(info) == ["conditioning", "mask", "strength", "set_cond_area"]
    assert info["set_cond_area"][0] == ["default", "mask bounds"]
    info = inputs("ConditioningSetTimestepRange")
    assert list(info) == ["conditioning", "start", "end"]
    assert info["start"] == ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}]
    assert info["end"][1]["default"] == 1.0
    for name in N:
        assert N[name].object_info(name)["output"] == ["CONDITIONING"]
