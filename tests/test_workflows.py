"""Whole workflows through the real nodes, the executor and the CLI, on a tiny SD1-shaped checkpoint."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inkwash.nodes.executor import Executor
from inkwash.nodes.registry import object_info
from inkwash.nodes.formats.png_metadata import parse_infotext, read_png_metadata

REPO = Path(__file__).resolve().parent.parent
CKPT = "tiny-sd1.safetensors"

# ComfyUI's default txt2img graph as its API example has it; only ckpt_name differs.
COMFYUI_DEFAULT = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
        "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal", "seed": 8566257, "steps": 20}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 512, "width": 512}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "masterpiece best quality girl"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def small(workflow, size=64, steps=4):
    workflow = copy.deepcopy(workflow)
    workflow["5"]["inputs"].update(width=size, height=size)
    workflow["3"]["inputs"]["steps"] = steps
    return workflow


def test_every_core_node_is_registered_with_comfyui_names(registry):
    expected = {"CheckpointLoaderSimple", "VAELoader", "CheckpointSave", "CLIPTextEncode", "CLIPSetLastLayer",
                "EmptyLatentImage", "KSampler", "KSamplerAdvanced", "VAEDecode", "VAEEncode", "VAEEncodeForInpaint",
                "SetLatentNoiseMask", "LoadImage", "LoadImageMask", "SaveImage", "PreviewImage", "ImageScale",
                "LatentUpscale", "ControlNetLoader", "ControlNetApplyAdvanced", "Canny", "MiDaS-DepthMapPreprocessor"}
    assert expected <= set(registry)
    info = object_info(registry)
    assert info["KSampler"]["input_order"]["required"] == [
        "model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image",
        "denoise"]
    assert info["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    json.dumps(info)  # the schema is plain JSON


def test_comfyui_default_workflow_runs_unchanged(registry, checkpoint, folders):
    events = []
    result = Executor(registry).execute(COMFYUI_DEFAULT, on_event=lambda n, d: events.append((n, d)))
    assert result.status == "success", result.error
    saved = result.outputs["9"]["images"]
    assert len(saved) == 1 and saved[0]["type"] == "output"
    path = folders.output_dir / saved[0]["subfolder"] / saved[0]["filename"]
    image = Image.open(path)
    assert image.size == (512, 512)
    assert np.asarray(image).std() > 1  # not a blank image
    metadata = read_png_metadata(path)
    assert metadata["prompt"] == COMFYUI_DEFAULT
    infotext = parse_infotext(metadata["parameters"])
    assert infotext["Prompt"] == "masterpiece best quality girl" and infotext["Seed"] == "8566257"
    progress = [d for n, d in events if n == "progress"]
    assert [p["value"] for p in progress] == list(range(1, 21)) and progress[0]["node"] == "3"
    assert progress[-1]["preview"] is not None


def test_changing_the_seed_reruns_only_sampler_and_downstream(registry, checkpoint):
    executor = Executor(registry)
    first = executor.execute(small(COMFYUI_DEFAULT))
    assert sorted(first.executed) == ["3", "4", "5", "6", "7", "8", "9"]
    changed = small(COMFYUI_DEFAULT)
    changed["3"]["inputs"]["seed"] = 1
    second = executor.execute(changed)
    assert second.executed == ["3", "8", "9"]
    assert sorted(second.cached) == ["4", "5", "6", "7"]
    third = executor.execute(changed)
    assert third.executed == [] and third.outputs["9"] == second.outputs["9"]


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "inkwash.webui.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_cli_runs_a_workflow_and_prints_events(checkpoint, folders, tmp_path):
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(small(COMFYUI_DEFAULT)))
    out = tmp_path / "images"
    done = cli("run", str(workflow), "--set", "3.seed=5", "--set", "6.text=a red circle",
               "--models-dir", str(folders.models_dir), "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    names = [e["type"] for e in events]
    assert names[0] == "execution_start" and names[-2:] == ["execution_success", "executing"]
    assert events[-1]["data"]["node"] is None  # ComfyUI's end of a prompt
    assert "progress" in names and "executed" in names
    (image,) = out.glob("*.png")
    metadata = read_png_metadata(image)
    assert metadata["prompt"]["3"]["inputs"]["seed"] == 5
    assert parse_infotext(metadata["parameters"])["Prompt"] == "a red circle"
    # the PNG it wrote runs again as a workflow
    again = cli("run", str(image), "--models-dir", str(folders.models_dir), "--output-dir", str(out))
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("*.png"))) == 2


def test_cli_invalid_workflow_exits_2_with_node_errors(checkpoint, folders, tmp_path):
    workflow = tmp_path / "workflow.json"
    bad = small(COMFYUI_DEFAULT)
    bad["3"]["inputs"]["steps"] = 0
    bad["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    bad["10"] = {"class_type": "NoSuchNode", "inputs": {}}
    workflow.write_text(json.dumps(bad))
    done = cli("run", str(workflow), "--models-dir", str(folders.models_dir))
    assert done.returncode == 2
    (event,) = [json.loads(line) for line in done.stdout.splitlines()]
    errors = event["data"]["node_errors"]
    assert errors["3"]["errors"][0]["type"] == "value_smaller_than_min"
    assert errors["4"]["errors"][0]["type"] == "value_not_in_list"
    assert errors["10"]["errors"][0]["type"] == "missing_node_type"
    not_json = tmp_path / "broken.json"
    not_json.write_text("{")
    assert cli("run", str(not_json)).returncode == 2
    assert cli("run", str(workflow), "--set", "99.seed=1").returncode == 2


def test_cli_execution_failure_exits_1(folders, tmp_path):
    path = folders.models_dir / "checkpoints" / "corrupt.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a checkpoint")
    workflow = tmp_path / "workflow.json"
    wf = small(COMFYUI_DEFAULT)
    wf["4"]["inputs"]["ckpt_name"] = "corrupt.safetensors"
    workflow.write_text(json.dumps(wf))
    done = cli("run", str(workflow), "--models-dir", str(folders.models_dir))
    assert done.returncode == 1
    *_, error, end = [json.loads(line) for line in done.stdout.splitlines()]
    assert error["type"] == "execution_error" and error["data"]["node_id"] == "4"
    assert end == {"type": "executing", "data": {"node": None, "display_node": None,
                                                 "prompt_id": error["data"]["prompt_id"]}}
    assert "corrupt.safetensors" in error["data"]["exception_message"]


@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "depth2img", "depth2img_sd2", "controlnet_canny"])
def test_shipped_workflows_validate_against_the_node_declarations(registry, name, folders):
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    validation = Executor(registry).validate(workflow)
    # Only the file-name choices may fail here (this test's folders are empty); structure and values must hold.
    for node_id, entry in validation.node_errors.items():
        assert {e["type"] for e in entry["errors"]} == {"value_not_in_list"}, (node_id, entry)
