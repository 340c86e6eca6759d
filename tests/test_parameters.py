"""The generation parameter set declared once (webui/parameters.py): its checks name the field, refuse
non-finite numbers, and its bounds are the ones the A1111 request models and the tabs' sliders use."""
import math

import pytest
from pydantic import ValidationError
from inkwash.webui import parameters
from inkwash.webui.a1111_api import Img2ImgRequest, Txt2ImgRequest
from inkwash.webui.parameters import BadRequest, GenerationParams, bounds, resolve, slider


@pytest.mark.parametrize("name", ["cfg_scale", "denoising_strength", "refiner_switch_at", "width", "steps",
                                  "hr_scale"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_naming_the_field(name, value):
    with pytest.raises(BadRequest) as caught:
        GenerationParams(**{name: value})
    assert caught.value.field == name
    assert "finite" in caught.value.message and repr(value) in caught.value.message


@pytest.mark.parametrize("name, value, message", [
    ("steps", 0, "steps: must be between 1 and 1000, got 0"),
    ("width", 63, "width: must be between 64 and 2048 pixels, got 63"),
    ("steps", True, "steps: expected a number, got True"),
    ("n_iter", 2.5, "n_iter: expected an integer, got 2.5"),
    ("prompt", 5, "prompt: expected text, got int"),
])
def test_messages_say_the_bounds_and_the_value_given(name, value, message):
    with pytest.raises(BadRequest) as caught:
        GenerationParams(**{name: value})
    assert str(caught.value) == message


def test_sizes_round_down_to_a_multiple_of_8_inside_the_bounds():
    params = GenerationParams(width=100, height=2055)
    assert (params.width, params.height) == (96, 2048)
    with pytest.raises(BadRequest, match="height: must be between 64 and 2048 pixels, got 2056"):
        GenerationParams(height=2056)


def test_the_a1111_request_models_share_the_types_with_their_own_defaults():
    for name in ("steps", "cfg_scale", "batch_size", "n_iter", "width", "height"):
        low, high = bounds(name)
        assert getattr(Txt2ImgRequest(**{name: low}), name) == low
        assert getattr(Txt2ImgRequest(**{name: high}), name) == high
        for outside in (low - 8, high + 8):
            with pytest.raises(ValidationError):
                Txt2ImgRequest(**{name: outside})
    assert bounds("steps") == (1, parameters.MAX_STEPS)
    # A1111's API defaults, where they differ from the tabs'
    assert Txt2ImgRequest().steps == 50 and GenerationParams().steps == 20
    assert Img2ImgRequest().inpainting_fill == 0 and GenerationParams().inpainting_fill == 1
    assert Img2ImgRequest().inpaint_full_res and not GenerationParams().inpaint_full_res
    assert not Txt2ImgRequest().save_images and GenerationParams().save_images


def test_slider_ranges_come_from_the_declaration():
    assert slider("width") == {"minimum": parameters.MIN_SIZE, "maximum": parameters.MAX_SIZE, "step": 8}
    assert slider("steps") == {"minimum": 1, "maximum": 150, "step": 1}  # A1111's UI range, inside the bounds
    assert slider("batch_size")["maximum"] <= bounds("batch_size")[1]
    for name in parameters.FIELDS:
        low, high = bounds(name)
        if low is not None and high is not None:
            ui = slider(name)
            assert low <= ui["minimum"] < ui["maximum"] <= high, name


def test_combinations_are_checked_naming_the_field():
    from PIL import Image
    with pytest.raises(BadRequest) as caught:
        GenerationParams(mask=Image.new("L", (8, 8)))
    assert caught.value.field == "mask"
    with pytest.raises(BadRequest) as caught:  # a built-in or an upscale model's file: checked with the folders
        resolve(GenerationParams(enable_hr=True, hr_upscaler="R-ESRGAN 4x+"))
    assert caught.value.field == "hr_upscaler"
    assert resolve(GenerationParams(hr_upscaler="R-ESRGAN 4x+")).hr_upscaler  # unused without hires fix


def test_the_generation_layer_imports_without_torch_or_diffusers():
    """Reading parameters and building workflows needs names (samplers, embeddings, LoRA hashes), not
    the libraries that run the models."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import inkwash.webui.parameters, inkwash.webui.generation, inkwash.webui.a1111_images\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
