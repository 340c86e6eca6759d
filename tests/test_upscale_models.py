"""Upscale models through spandrel: a tiny Real-ESRGAN-shaped RRDBNet, detected, run untiled and tiled,
refused when corrupt or hostile, and run by the UpscaleModelLoader / ImageUpscaleWithModel nodes."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from inkwash.nodes.executor import Executor
from inkwash.nodes.runtime import upscale_models
from tiny_models import TinyRRDBNet, write_tiny_esrgan


@pytest.fixture(autouse=True)
def _one_thread(one_thread, fresh_model_cache):
    yield


@pytest.mark.parametrize("name", ["4x-tiny.safetensors", "4x-tiny.pth"])
def test_spandrel_detects_the_file_and_runs_its_weights(tmp_path, name):
    model = upscale_models.load(write_tiny_esrgan(tmp_path, name))
    assert model.architecture.name == "ESRGAN" and model.scale == 4
    assert model.tags == ["8nf", "1nb"]
    pixels = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        expected = TinyRRDBNet()(pixels)  # the network the file was written from
    out = upscale_models.upscale(model, pixels.movedim(1, -1))
    assert out.shape == (1, 48, 40, 3)
    assert torch.allclose(out, expected.clamp(0, 1).movedim(1, -1), atol=1e-5)


def test_tiled_upscale_agrees_with_untiled(tmp_path):
    model = upscale_models.load(write_tiny_esrgan(tmp_path, "4x.safetensors"))
    image = torch.rand(2, 40, 48, 3)
    whole = upscale_models.upscale(model, image)  # one tile
    tiles = []
    tiled = upscale_models.upscale(model, image, tile=32, overlap=16, on_tile=lambda d, t: tiles.append((d, t)))
    seams = upscale_models.upscale(model, image, tile=32, overlap=0)
    assert tiled.shape == whole.shape == (2, 160, 192, 3)
    assert tiles == [(1, 4), (2, 4), (3, 4), (4, 4)]
    difference = (tiled - whole).abs()
    assert difference.mean() < 0.002 and difference.max() < 0.05
    # the ramps across the overlaps are what make them agree: without them the tile edges show
    assert (seams - whole).abs().max() > 2 * difference.max()


def test_tile_starts_cover_the_side_with_overlap():
    assert upscale_models.tile_starts(40, 64, 8) == [0]
    assert upscale_models.tile_starts(1024, 512, 32) == [0, 256, 512]
    for size in (33, 100, 101, 1000):
        starts = upscale_models.tile_starts(size, 32, 8)
        assert starts[0] == 0 and starts[-1] + 32 == size
        assert all(0 < b - a <= 32 - 8 for a, b in zip(starts, starts[1:]))
        assert (len(starts) - 2) * (32 - 8) + 32 < size  # one tile fewer could not cover the side


class _NearestX4:
    """Stands in for a 4x model: records the tiles it is given, upscales them by repeating pixels."""

    scale, input_channels, output_channels, supports_half = 4, 3, 3, True

    def __init__(self):
        self.tiles = []

    def to(self, **_):
        return self

    def __call__(self, pixels):
        self.tiles.append(tuple(pixels.shape[-2:]))
        return pixels.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)


def test_a_4x_upscale_of_1024_square_runs_in_512_tiles():
    model = _NearestX4()
    image = torch.rand(1, 1024, 1024, 3)
    out = upscale_models.upscale(model, image)
    assert out.shape == (1, 4096, 4096, 3)
    assert set(model.tiles) == {(512, 512)} and len(model.tiles) == 9  # never more than a tile at a time
    # blending equal overlapping tiles gives back what one pass would
    assert torch.allclose(out[0, ::4, ::4], image[0], atol=1e-6)


def test_a_corrupt_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + os.urandom(64))
    with pytest.raises(upscale_models.UpscaleModelError, match="broken.safetensors.*corrupt"):
        upscale_models.load(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "not-an-upscaler.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(upscale_models.UpscaleModelError, match="not-an-upscaler.safetensors: not an upscale model"):
        upscale_models.load(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_hostile_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "was-run"
    path = tmp_path / "4x-evil.pth"
    torch.save({"params_ema": TinyRRDBNet().state_dict(), "payload": _RunsCode(marker)}, path)
    with pytest.raises(upscale_models.UpscaleModelError) as caught:
        upscale_models.load(path)
    message = str(caught.value)
    assert "4x-evil.pth" in message and "refused" in message and "arbitrary code" in message
    assert "weights_only=False" not in message and "weights_only" not in message.replace("weights_only=True", "")
    assert not marker.exists()


def test_workflow_loads_upscales_and_saves(registry, folders):
    write_tiny_esrgan(folders.models_dir / "upscale_models", "4x-tiny.pth")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folders.input_dir / "small.png")
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-tiny.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}},
    }
    events = []
    result = Executor(registry).execute(workflow, on_event=lambda name, data: events.append(name))
    assert result.status == "success", result.error
    saved = Image.open(folders.output_dir / result.outputs["4"]["images"][0]["filename"]).convert("RGB")
    assert saved.size == (96, 80)
    pixels = torch.from_numpy(np.asarray(Image.open(folders.input_dir / "small.png"), dtype=np.float32) / 255)
    with torch.no_grad():
        expected = TinyRRDBNet()(pixels.movedim(-1, 0)[None]).clamp(0, 1)[0].movedim(0, -1)
    got = torch.from_numpy(np.asarray(saved, dtype=np.float32) / 255)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-4
    assert "progress" in events


def test_unknown_model_name_is_a_validation_error(registry, folders):
    workflow = {"2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "missing.pth"}},
                "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
                "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
                "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    validation = Executor(registry).validate(workflow)
    errors = validation.node_errors["2"]["errors"]
    assert errors[0]["type"] == "value_not_in_list" and errors[0]["extra_info"]["input_name"] == "model_name"


def test_a1111_upscaler_folders_come_from_extra_model_paths(tmp_path):
    from inkwash.nodes import folders as folders_module

    a1111 = tmp_path / "webui"
    write_tiny_esrgan(a1111 / "models" / "ESRGAN", "4x-esrgan.pth")
    write_tiny_esrgan(a1111 / "models" / "RealESRGAN", "RealESRGAN_x4plus.safetensors")
    yaml_file = tmp_path / "extra_model_paths.yaml"
    yaml_file.write_text(f"a111:\n  base_path: {a1111}\n  upscale_models: |\n    models/ESRGAN\n"
                         "    models/RealESRGAN\n")
    previous = folders_module.current()
    try:
        folders = folders_module.configure(models_dir=tmp_path / "models", extra_model_paths=yaml_file)
        assert folders.list("upscale_models") == ["4x-esrgan.pth", "RealESRGAN_x4plus.safetensors"]
        assert upscale_models.load(folders.find("upscale_models", "4x-esrgan.pth")).scale == 4
    finally:
        folders_module._current = previous


def test_infotext_names_an_upscale_model_between_two_passes():
    from inkwash.nodes.formats.png_metadata import infotext_from_workflow, parse_infotext
    from inkwash.webui import generation as gen

    params = gen.resolve(gen.GenerationParams(prompt="a red circle", checkpoint="tiny-sd1.safetensors", width=64,
                                              height=64, steps=2, enable_hr=True, hr_scale=2.0, hr_upscaler="Lanczos"))
    workflow = gen.txt2img_workflow(params)
    decoded = workflow["14"]["inputs"]["image"]  # the first pass, decoded, as the pixel upscale takes it
    workflow["20"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "sub/4x-UltraSharp.pth"}}
    workflow["21"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["20", 0], "image": decoded}}
    workflow["14"]["inputs"]["image"] = ["21", 0]
    info = parse_infotext(infotext_from_workflow(workflow, "9"))
    assert info["Hires upscaler"] == "sub/4x-UltraSharp" and info["Hires upscale"] == "2"
