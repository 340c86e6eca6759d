"""ComfyUI's latent nodes: composite, blend, batch, crop, flip, rotate, and .latent files."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from inkwash.nodes.core import latent_files, latent_ops
from inkwash.nodes.executor import Executor
from inkwash.nodes.runtime import latent_files as latent_file_format

N = latent_ops.NODES


def run(name, **inputs):
    return N[name]().run(**inputs)


def ramp(batch=1, channels=4, height=8, width=8):
    return torch.arange(batch * channels * height * width, dtype=torch.float32).reshape(batch, channels, height, width)


# -- composite --------------------------------------------------------------------------------------------

def test_latent_composite_pastes_at_pixel_offset_divided_by_8_and_keeps_other_keys():
    to = {"samples": torch.zeros(1, 4, 8, 8), "batch_index": [3]}
    source = {"samples": torch.ones(1, 4, 2, 3)}
    (out,) = run("LatentComposite", samples_to=to, samples_from=source, x=16, y=8, feather=0)
    expected = torch.zeros(1, 4, 8, 8)
    expected[:, :, 1:3, 2:5] = 1
    assert torch.equal(out["samples"], expected)
    assert out["batch_index"] == [3] and torch.equal(to["samples"], torch.zeros(1, 4, 8, 8))  # input untouched


def test_latent_composite_cuts_what_falls_outside_and_feathers_inner_edges():
    to = {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = run("LatentComposite", samples_to=to, samples_from={"samples": torch.ones(1, 4, 6, 6)}, x=32, y=32,
                 feather=0)
    assert out["samples"][:, :, 4:, 4:].eq(1).all() and out["samples"][:, :, :4].eq(0).all()

    (feathered,) = run("LatentComposite", samples_to=to, samples_from={"samples": torch.ones(1, 4, 4, 4)},
                       x=16, y=16, feather=16)
    # a 2-latent-pixel ramp on every side inside the target: 1/2 at the edge, then full
    row = feathered["samples"][0, 0, 4, 2:6]
    assert torch.allclose(row, torch.tensor([0.5, 1.0, 1.0, 0.5]))
    corner = feathered["samples"][0, 0, 2, 2]
    assert corner == pytest.approx(0.25)


def test_latent_composite_masked_follows_mask_and_resize_source():
    destination = {"samples": torch.zeros(2, 4, 8, 8), "noise_mask": torch.ones(1, 1, 8, 8)}
    source = {"samples": torch.full((1, 4, 4, 4), 2.0)}
    mask = torch.zeros(4, 4)
    mask[:, :2] = 1
    (out,) = run("LatentCompositeMasked", destination=destination, source=source, x=8, y=8, resize_source=False,
                 mask=mask)
    assert out["samples"].shape == (2, 4, 8, 8) and "noise_mask" in out
    assert out["samples"][:, :, 1:5, 1:3].eq(2).all()  # mask 1: source
    assert out["samples"][:, :, 1:5, 3:5].eq(0).all()  # mask 0: destination
    (no_mask,) = run("LatentCompositeMasked", destination=destination, source=source, x=0, y=0, resize_source=True)
    assert no_mask["samples"].eq(2).all()  # resized to the destination and pasted whole


def test_latent_blend_mixes_and_resizes_the_second():
    a, b = {"samples": torch.ones(1, 4, 8, 8)}, {"samples": torch.full((1, 4, 8, 8), 3.0)}
    (out,) = run("LatentBlend", samples1=a, samples2=b, blend_factor=0.25)
    assert torch.allclose(out["samples"], torch.full((1, 4, 8, 8), 0.25 + 2.25))
    (resized,) = run("LatentBlend", samples1=a, samples2={"samples": torch.full((1, 4, 4, 4), 3.0)}, blend_factor=0.5)
    assert resized["samples"].shape == (1, 4, 8, 8)
    assert torch.allclose(resized["samples"], torch.full((1, 4, 8, 8), 2.0))
    with pytest.raises(ValueError, match="latent channels"):
        run("LatentBlend", samples1=a, samples2={"samples": torch.ones(1, 16, 8, 8)}, blend_factor=0.5)


# -- batches ----------------------------------------------------------------------------------------------

def test_latent_from_batch_slices_with_noise_masks_and_batch_index():
    samples = {"samples": ramp(batch=4), "noise_mask": torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 1, 8, 8)}
    (out,) = run("LatentFromBatch", samples=samples, batch_index=1, length=2)
    assert torch.equal(out["samples"], samples["samples"][1:3])
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 2.0]
    assert out["batch_index"] == [1, 2]  # so each keeps its own noise in the sampler
    (last,) = run("LatentFromBatch", samples=samples, batch_index=-1, length=5)  # negative and too long
    assert torch.equal(last["samples"], samples["samples"][3:]) and last["batch_index"] == [3]
    (again,) = run("LatentFromBatch", samples=out, batch_index=1, length=1)
    assert again["batch_index"] == [2]  # indices of the original batch are kept


def test_repeat_latent_batch_repeats_masks_and_continues_batch_index():
    samples = {"samples": ramp(batch=2), "noise_mask": torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]),
               "batch_index": [4, 5]}
    (out,) = run("RepeatLatentBatch", samples=samples, amount=3)
    assert out["samples"].shape == (6, 4, 8, 8) and torch.equal(out["samples"][2:4], samples["samples"])
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert out["batch_index"] == [4, 5, 6, 7, 8, 9]


# -- crop, flip, rotate -----------------------------------------------------------------------------------

def test_latent_crop_flip_rotate():
    samples = {"samples": ramp(height=16, width=16)}
    (cropped,) = run("LatentCrop", samples=samples, width=64, height=32, x=16, y=8)
    assert torch.equal(cropped["samples"], samples["samples"][:, :, 1:5, 2:10])
    (clamped,) = run("LatentCrop", samples=samples, width=64, height=64, x=1000, y=1000)
    assert torch.equal(clamped["samples"], samples["samples"][:, :, 8:16, 8:16])  # corner kept 8 inside

    (vertical,) = run("LatentFlip", samples=samples, flip_method="x-axis: vertically")
    assert torch.equal(vertical["samples"][:, :, 0], samples["samples"][:, :, -1])
    (horizontal,) = run("LatentFlip", samples=samples, flip_method="y-axis: horizontally")
    assert torch.equal(horizontal["samples"][..., 0], samples["samples"][..., -1])

    tall = {"samples": ramp(height=4, width=8)}
    (quarter,) = run("LatentRotate", samples=tall, rotation="90 degrees")
    assert quarter["samples"].shape == (1, 4, 8, 4)
    # clockwise: the bottom-left corner goes to the top-left
    assert quarter["samples"][0, 0, 0, 0] == tall["samples"][0, 0, -1, 0]
    (half,) = run("LatentRotate", samples=tall, rotation="180 degrees")
    assert torch.equal(half["samples"], tall["samples"].flip(2, 3))
    (none,) = run("LatentRotate", samples=tall, rotation="none")
    assert torch.equal(none["samples"], tall["samples"])


def test_latent_transform_declarations_match_comfyui():
    assert N["LatentFlip"].object_info("LatentFlip")["input"]["required"]["flip_method"][0] == [
        "x-axis: vertically", "y-axis: horizontally"]
    assert N["LatentRotate"].object_info("LatentRotate")["input"]["required"]["rotation"][0] == [
        "none", "90 degrees", "180 degrees", "270 degrees"]


# -- .latent files ----------------------------------------------------------------------------------------

def test_save_latent_writes_comfyui_format_and_load_latent_reads_it_back(folders):
    samples = torch.randn(2, 4, 8, 8)
    node = latent_files.SaveLatent()
    node.ctx.prompt = {"1": {"class_type": "SaveLatent", "inputs": {}}}
    node.ctx.extra_pnginfo = {"workflow": {"nodes": []}}
    result = node.run(samples={"samples": samples}, filename_prefix="latents/ComfyUI")
    (entry,) = result.ui["latents"]
    assert entry == {"filename": "ComfyUI_00001_.latent", "subfolder": "latents", "type": "output"}
    path = folders.output_dir / "latents" / entry["filename"]
    tensors = load_file(str(path))
    assert set(tensors) == {"latent_tensor", "latent_format_version_0"}
    # ComfyUI keeps raw VAE latents: UNet-space latents divided by SD's scaling factor
    assert torch.allclose(tensors["latent_tensor"], samples / 0.18215)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    assert json.loads(metadata["prompt"]) == node.ctx.prompt and json.loads(metadata["workflow"]) == {"nodes": []}

    second = node.run(samples={"samples": samples}, filename_prefix="latents/ComfyUI")
    assert second.ui["latents"][0]["filename"] == "ComfyUI_00002_.latent"

    (folders.input_dir / "mine.latent").write_bytes(path.read_bytes())
    assert latent_files.input_latents() == ["mine.latent"]
    (loaded,) = latent_files.LoadLatent().run(latent="mine.latent")
    assert torch.allclose(loaded["samples"], samples, atol=1e-6)


def test_load_latent_reads_comfyui_files_old_and_new(folders):
    raw = torch.randn(1, 4, 8, 8)
    save_file({"latent_tensor": raw, "latent_format_version_0": torch.tensor([])},
              str(folders.input_dir / "comfy.latent"))
    (loaded,) = latent_files.LoadLatent().run(latent="comfy.latent")
    assert torch.allclose(loaded["samples"], raw * 0.18215)
    save_file({"latent_tensor": raw}, str(folders.input_dir / "old.latent"))  # first format: scaled already
    (old,) = latent_files.LoadLatent().run(latent="old.latent")
    assert torch.equal(old["samples"], raw)


def test_latent_files_refuse_bad_names_and_bad_files(folders, registry):
    assert "leaves" in latent_files.SaveLatent.check(filename_prefix="../outside")
    assert "Invalid latent file" in latent_files.LoadLatent.check(latent="../../etc/passwd")
    assert "Invalid latent file" in latent_files.LoadLatent.check(latent="missing.latent")
    (folders.input_dir / "broken.latent").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="broken.latent"):
        latent_files.LoadLatent().run(latent="broken.latent")
    save_file({"other": torch.zeros(1)}, str(folders.input_dir / "other.latent"))
    with pytest.raises(ValueError, match="no latent_tensor"):
        latent_file_format.load(folders.input_dir / "other.latent")

    # through the executor: a missing file is a validation error naming the node and input
    workflow = {"1": {"class_type": "LoadLatent", "inputs": {"latent": "nope.latent"}},
                "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}}
    validation = Executor(registry).validate(workflow)
    assert not validation.ok and "1" in validation.node_errors


def test_latent_nodes_run_in_a_graph(folders, registry):
    save_file({"latent_tensor": torch.ones(2, 4, 8, 8), "latent_format_version_0": torch.tensor([])},
              str(folders.input_dir / "in.latent"))
    workflow = {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": "in.latent"}},
        "2": {"class_type": "LatentFromBatch", "inputs": {"samples": ["1", 0], "batch_index": 1, "length": 1}},
        "3": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["2", 0], "amount": 3}},
        "4": {"class_type": "LatentFlip", "inputs": {"samples": ["3", 0], "flip_method": "x-axis: vertically"}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "out"}},
    }
    result = Executor(registry).execute(workflow)
    assert result.outputs["5"]["latents"][0]["filename"] == "out_00001_.latent"
    saved = load_file(str(folders.output_dir / "out_00001_.latent"))["latent_tensor"]
    assert saved.shape == (3, 4, 8, 8) and torch.allclose(saved, torch.ones(3, 4, 8, 8))
