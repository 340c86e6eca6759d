"""Image runtime (tensors, files, resizing, saving) and the image nodes."""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from inkwash.nodes import graph
from inkwash.nodes.core import image as image_nodes
from inkwash.nodes.declare import NodeContext
from inkwash.nodes.executor import Executor
from inkwash.nodes.folders import UnsafePath
from inkwash.nodes.runtime import image_files, images
from inkwash.nodes.runtime.images import ImageLoadError
from inkwash.nodes.formats.png_metadata import read_png_metadata

from test_png_metadata import DEFAULT_GRAPH


def _rgb(height=6, width=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# -- tensors ---------------------------------------------------------------------------------------------

def test_pil_tensor_round_trip_is_exact():
    array = _rgb()
    tensor = images.pil_to_tensor(Image.fromarray(array))
    assert tensor.shape == (1, 6, 8, 3) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert np.array_equal(np.asarray(images.tensor_to_pil(tensor)), array)
    assert [p.size for p in images.tensor_to_pils(torch.rand(3, 5, 7, 4))] == [(7, 5)] * 3
    with pytest.raises(ValueError, match="one image"):
        images.tensor_to_pil(torch.rand(2, 4, 4, 3))


def test_mask_round_trip():
    mask = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])
    pil = images.mask_to_pil(mask)
    assert pil.mode == "L"
    assert torch.allclose(images.pil_to_mask(pil), mask, atol=1 / 255)


# -- loading ---------------------------------------------------------------------------------------------

def test_load_rgba_mask_is_one_minus_alpha(tmp_path):
    rgba = np.dstack([_rgb(), np.full((6, 8), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image, mask = images.load_image(tmp_path / "a.png")
    assert image.shape == (1, 6, 8, 3) and mask.shape == (1, 6, 8)
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 1] == 0.0
    assert np.array_equal((image[0].numpy() * 255).round().astype(np.uint8), rgba[..., :3])


def test_load_without_alpha_gives_zero_mask(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "b.jpg")
    image, mask = images.load_image(tmp_path / "b.jpg")
    assert image.shape == (1, 6, 8, 3) and mask.shape == (1, 6, 8) and mask.sum() == 0


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((2, 4, 3), np.uint8)
    array[0, 0] = 255  # top-left marked
    pil = Image.fromarray(array)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pil.save(tmp_path / "phone.png", exif=exif)
    image, _ = images.load_image(tmp_path / "phone.png")
    assert image.shape == (1, 4, 2, 3)
    assert image[0, 0, 1].sum() == 3.0  # the marked corner is now top-right


def test_sixteen_bit_grayscale_keeps_precision(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "deep.png")
    image, _ = images.load_image(tmp_path / "deep.png")
    assert torch.allclose(image[0, 0, :, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_animation_frames_become_a_batch(tmp_path):
    frames = [Image.new("RGB", (5, 4), c) for c in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    image, mask = images.load_image(tmp_path / "anim.gif")
    assert image.shape == (3, 4, 5, 3) and mask.shape == (3, 4, 5)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="junk.png"):
        images.load_image(tmp_path / "junk.png")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png"):
        images.load_image(tmp_path / "cut.png")
    with pytest.raises(ImageLoadError, match="gone.png"):
        images.load_image(tmp_path / "gone.png")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_huge_images_are_refused_before_decoding(tmp_path, monkeypatch):
    # A 60 kB-claimed-per-row PNG header saying 50000x50000: refused from the header alone.
    header = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(ImageLoadError, match="bomb.png.*too large"):
        images.load_image(tmp_path / "bomb.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 10)
    Image.fromarray(_rgb()).save(tmp_path / "small.png")
    with pytest.raises(ImageLoadError, match="too large: 8x6"):
        images.load_image(tmp_path / "small.png")


def test_load_mask_channels(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 255, 128, 0, 64
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    path = tmp_path / "m.png"
    assert torch.allclose(images.load_mask(path, "red"), torch.ones(1, 2, 2))
    assert torch.allclose(images.load_mask(path, "green"), torch.full((1, 2, 2), 128 / 255))
    assert torch.allclose(images.load_mask(path, "blue"), torch.zeros(1, 2, 2))
    assert torch.allclose(images.load_mask(path, "alpha"), torch.full((1, 2, 2), 1 - 64 / 255))
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    assert images.load_mask(tmp_path / "rgb.png", "alpha").sum() == 0


# -- resizing --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", images.UPSCALE_METHODS)
def test_scale_sizes(method):
    image = torch.rand(2, 40, 60, 3)
    assert images.scale_image(image, 30, 20, method).shape == (2, 20, 30, 3)
    assert images.scale_image(image, 90, 0, method).shape == (2, 60, 90, 3)  # height from aspect
    assert images.scale_image(image, 0, 20, method).shape == (2, 20, 30, 3)  # width from aspect
    out = images.scale_image(image, 33, 33, method, "center")
    assert out.shape == (2, 33, 33, 3) and 0 <= out.min() and out.max() <= 1
    assert images.scale_image(image, 0, 0, method) is image


def test_center_crop_keeps_the_middle():
    image = torch.zeros(1, 10, 30, 3)
    image[:, :, 10:20] = 1.0  # the middle third is white
    out = images.scale_image(image, 10, 10, "nearest-exact", "center")
    assert out.shape == (1, 10, 10, 3) and out.min() == 1.0
    assert images.scale_image(image, 10, 10, "nearest-exact", "disabled").min() == 0.0


# -- saving ----------------------------------------------------------------------------------------------

def test_save_names_count_up_from_existing_files(tmp_path):
    (tmp_path / "ComfyUI_00007_.png").write_bytes(b"")
    (tmp_path / "ComfyUIX_00099_.png").write_bytes(b"")  # another prefix
    first = image_files.save_png(Image.new("RGB", (2, 2)), tmp_path, "ComfyUI")
    second = image_files.save_png(Image.new("RGB", (2, 2)), tmp_path, "ComfyUI")
    assert (first.filename, second.filename) == ("ComfyUI_00008_.png", "ComfyUI_00009_.png")
    nested = image_files.save_png(Image.new("RGB", (3, 2)), tmp_path, "a/b/%width%x%height%")
    assert (nested.subfolder, nested.filename) == ("a/b", "3x2_00001_.png")
    assert (tmp_path / "a" / "b" / "3x2_00001_.png").is_file()


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/escape", "", "."])
def test_save_refuses_prefixes_leaving_the_folder(tmp_path, prefix):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafePath):
        image_files.save_png(Image.new("RGB", (2, 2)), out, prefix)
    assert not list(tmp_path.glob("escape*")) and not list(tmp_path.glob("*/escape*"))


def test_save_refuses_symlinked_subfolder_pointing_outside(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "link").symlink_to(outside)
    with pytest.raises(UnsafePath):
        image_files.save_png(Image.new("RGB", (2, 2)), out, "link/x")
    assert list(outside.iterdir()) == []


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    image_files.save_png(Image.new("RGB", (2, 2)), tmp_path, "ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok_00001_.png"]

    def fail_midway(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        image_files.save_png(Image.new("RGB", (2, 2)), tmp_path, "ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok_00001_.png"]


def test_saved_file_has_usual_permissions(tmp_path):
    saved = image_files.save_png(Image.new("RGB", (2, 2)), tmp_path, "p")
    umask = os.umask(0)
    os.umask(umask)
    assert saved.path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_png_metadata_module_imports_no_torch():
    code = ("import sys, inkwash.nodes.formats.png_metadata, inkwash.nodes.runtime.image_files; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- nodes -----------------------------------------------------------------------------------------------

def _write_input(folders, name, array):
    path = folders.input_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_load_image_node_lists_checks_and_loads(folders):
    rgba = np.dstack([_rgb(), np.zeros((6, 8), np.uint8)])
    _write_input(folders, "cat.png", rgba)
    _write_input(folders, "sub/dog.png", _rgb())
    (folders.input_dir / "notes.txt").write_text("x")
    assert image_nodes.input_images() == ["cat.png", "sub/dog.png"]
    LoadImage = image_nodes.NODES["LoadImage"]
    assert LoadImage.check(image="cat.png") is None
    image, mask = LoadImage().run(image="cat.png")
    assert image.shape == (1, 6, 8, 3) and mask.shape == (1, 6, 8) and mask.min() == 1.0
    assert LoadImage.object_info("LoadImage")["input"]["required"]["image"] == [
        ["cat.png", "sub/dog.png"], {"image_upload": True}]


def test_load_image_refuses_traversal_and_outside_symlinks(folders, tmp_path):
    outside = tmp_path / "secret.png"
    Image.fromarray(_rgb()).save(outside)
    (folders.input_dir / "link.png").symlink_to(outside)
    LoadImage = image_nodes.NODES["LoadImage"]
    for name in ("../secret.png", str(outside), "link.png", "missing.png"):
        assert "Invalid image file" in LoadImage.check(image=name)
    registry = image_nodes.NODES
    for name, kind in (("../secret.png", "value_not_in_list"), ("link.png", "custom_validation_failed")):
        workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        validation = graph.validate(workflow, registry)
        assert not validation.ok
        assert validation.node_errors["1"]["errors"][0]["type"] == kind


def test_load_image_reruns_when_file_content_changes(folders):
    path = _write_input(folders, "in.png", _rgb(seed=1))
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
                "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "area",
                                                             "width": 4, "height": 0, "crop": "disabled"}},
                "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}}}
    executor = Executor(image_nodes.NODES)
    first = executor.execute(workflow)
    assert first.status == "success", first.error
    assert executor.execute(workflow).executed == []  # same file: all cached
    before = image_nodes.LoadImage.fingerprint(image="in.png")
    Image.fromarray(_rgb(seed=2)).save(path)
    assert image_nodes.LoadImage.fingerprint(image="in.png") != before
    assert executor.execute(workflow).executed == ["1", "2", "3"]
    assert sorted(p.name for p in folders.output_dir.iterdir()) == ["t_00001_.png", "t_00002_.png"]


def test_load_image_mask_node(folders):
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 1] = 255
    _write_input(folders, "m.png", rgba)
    LoadImageMask = image_nodes.NODES["LoadImageMask"]
    (mask,) = LoadImageMask().run(image="m.png", channel="green")
    assert mask.shape == (1, 3, 3) and mask.min() == 1.0
    assert LoadImageMask.check(image="../m.png", channel="green")


def test_save_image_node_writes_metadata(folders):
    workflow_ui = {"nodes": [], "links": [], "version": 0.4}
    ctx = NodeContext("9", prompt=DEFAULT_GRAPH, extra_pnginfo={"workflow": workflow_ui})
    result = image_nodes.NODES["SaveImage"](ctx).run(images=torch.rand(2, 16, 24, 3), filename_prefix="runs/cat")
    assert result.outputs == ()
    assert result.ui == {"images": [
        {"filename": "cat_00001_.png", "subfolder": "runs", "type": "output"},
        {"filename": "cat_00002_.png", "subfolder": "runs", "type": "output"}]}
    first = read_png_metadata(folders.output_dir / "runs" / "cat_00001_.png")
    second = read_png_metadata(folders.output_dir / "runs" / "cat_00002_.png")
    assert first["prompt"] == DEFAULT_GRAPH and first["workflow"] == workflow_ui
    assert first["parameters"].startswith("masterpiece best quality girl\nNegative prompt: bad hands\nSteps: 20, ")
    assert "Seed: 8566257, Size: 24x16, " in first["parameters"]  # size of the actual image
    assert "Seed: 8566258, " in second["parameters"]  # each image of a batch has its own seed


def test_save_image_node_refuses_traversal(folders):
    node = image_nodes.NODES["SaveImage"](NodeContext("9"))
    for prefix in ("../x", "/tmp/x"):
        with pytest.raises(UnsafePath):
            node.run(images=torch.rand(1, 4, 4, 3), filename_prefix=prefix)


def test_save_image_without_workflow_writes_no_metadata(folders):
    image_nodes.NODES["SaveImage"]().run(images=torch.rand(1, 4, 4, 3), filename_prefix="bare")
    path = folders.output_dir / "bare_00001_.png"
    assert read_png_metadata(path) == {"prompt": None, "workflow": None, "parameters": None}


def test_preview_image_goes_to_temp(folders):
    result = image_nodes.NODES["PreviewImage"](NodeContext("9", prompt=DEFAULT_GRAPH)).run(images=torch.rand(1, 4, 4, 3))
    (entry,) = result.ui["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    assert entry["filename"].startswith("ComfyUI_temp_") and entry["filename"].endswith("_00001_.png")
    assert (folders.temp_dir / entry["filename"]).is_file()
    assert list(folders.output_dir.iterdir()) == []


def test_image_scale_node_declaration():
    info = image_nodes.NODES["ImageScale"].object_info("ImageScale")
    assert info["input"]["required"]["upscale_method"][0] == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert info["input"]["required"]["width"] == ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}]
    assert info["input"]["required"]["crop"][0] == ["disabled", "center"]
    (out,) = image_nodes.NODES["ImageScale"]().run(image=torch.rand(1, 8, 16, 3), upscale_method="bilinear",
                                                    width=0, height=4, crop="disabled")
    assert out.shape == (1, 4, 8, 3)
