"""Hires fix: LatentUpscaleBy / ImageScaleBy, the second pass the tabs and the A1111 API add to txt2img
(latent and pixel upscalers, resize-to, its own steps, sampler and prompt) and A1111's infotext for it,
run on a tiny SD1-shaped checkpoint."""
import base64
import copy
import io
import json

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from inkwash.nodes.core.image import ImageScaleBy
from inkwash.nodes.core.latent import LatentUpscaleBy
from inkwash.nodes.executor import Executor
from inkwash.nodes.registry import object_info
from inkwash.nodes.formats.png_metadata import infotext_from_workflow, parse_infotext, read_png_metadata
from inkwash.webui import a1111_extras
from inkwash.webui import generation as gen
from inkwash.webui import generation_passes as passes
from inkwash.webui.a1111_api import router
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.generation import BadRequest, GenerationParams
from inkwash.webui.jobs import JobQueue
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

CKPT = "tiny-sd1.safetensors"


@pytest.fixture
def a1111_client(folders, checkpoint, registry, tmp_path):
    """The A1111 API on a job queue, with the tiny checkpoint."""
    hub = EventHub()
    queue = JobQueue(tmp_path / "jobs.db", registry, hub)
    queue.start()
    ctx = ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=tmp_path,
                        max_upload_bytes=2**21, max_pixels=512 * 512)
    app = FastAPI()
    app.include_router(a1111_extras.router(ctx))  # /upscalers
    app.include_router(router(ctx))
    with TestClient(app) as client:
        yield client
    queue.close()


def small(**changes) -> GenerationParams:
    values = {"prompt": "a red circle", "negative_prompt": "blurry", "checkpoint": CKPT, "sampler_name": "euler",
              "steps": 2, "cfg_scale": 6.5, "seed": 1234, "width": 64, "height": 64, "enable_hr": True,
              "hr_scale": 2.0, "hr_second_pass_steps": 4, "denoising_strength": 0.5}
    values.update(changes)
    return GenerationParams(**values)


def run(executor, workflow, events=None):
    result = executor.execute(workflow, on_event=(lambda n, d: events.append((n, d))) if events is not None else None)
    assert result.status == "success", result.error
    return result


def saved_image(folders, result, node="9"):
    entry = result.outputs[node]["images"][0]
    base = folders.temp_dir if entry["type"] == "temp" else folders.output_dir
    path = base / entry["subfolder"] / entry["filename"]
    return path, np.asarray(Image.open(path).convert("RGB"), dtype=int)


# -- the nodes ------------------------------------------------------------------------------------------

def test_upscale_by_nodes_declare_comfyui_inputs_and_scale(registry):
    info = object_info(registry)
    assert info["LatentUpscaleBy"]["input_order"]["required"] == ["samples", "upscale_method", "scale_by"]
    assert info["ImageScaleBy"]["input_order"]["required"] == ["image", "upscale_method", "scale_by"]
    assert info["LatentUpscaleBy"]["input"]["required"]["upscale_method"][0] == [
        "nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
    assert info["ImageScaleBy"]["input"]["required"]["scale_by"][1]["max"] == 8.0

    latent = {"samples": torch.randn(2, 4, 8, 12), "noise_mask": torch.ones(2, 1, 64, 96)}
    for method in ("nearest-exact", "bilinear", "bicubic", "bislerp"):
        (out,) = LatentUpscaleBy().run(latent, method, 1.5)
        assert out["samples"].shape == (2, 4, 12, 18) and "noise_mask" in out
    (image,) = ImageScaleBy().run(torch.rand(1, 10, 20, 3), "lanczos", 2.5)
    assert image.shape == (1, 25, 50, 3) and 0 <= image.min() and image.max() <= 1


# -- building the workflow --------------------------------------------------------------------------------

def test_the_shipped_hires_workflow_is_what_the_option_builds():
    shipped = gen.template("txt2img_hires")
    plain = gen.template("txt2img")
    params = GenerationParams(prompt=plain["6"]["inputs"]["text"], checkpoint="inkwash-demo.safetensors",
                              sampler_name="euler", scheduler="normal", steps=20, cfg_scale=5.0, seed=42, width=128,
                              height=128, enable_hr=True, hr_scale=2.0, hr_second_pass_steps=10, denoising_strength=0.6)
    assert gen.txt2img_workflow(params) == shipped
    assert shipped["14"]["class_type"] == "LatentUpscaleBy" and shipped["17"]["inputs"]["latent_image"] == ["14", 0]
    assert shipped["8"]["inputs"]["samples"] == ["17", 0]
    text = infotext_from_workflow(shipped, "9", size=(256, 256), version="v")
    assert text.endswith("Size: 128x128, Model: inkwash-demo, Denoising strength: 0.6, RNG: NV, Hires upscale: 2, "
                         "Hires steps: 10, Hires upscaler: Latent, Version: v")


@pytest.mark.parametrize("upscaler, nodes", [
    ("Latent", ["LatentUpscaleBy"]), ("Latent (bicubic)", ["LatentUpscaleBy"]),
    ("Lanczos", ["VAEDecode", "ImageScaleBy", "VAEEncode"]), ("None", ["VAEDecode", "ImageScaleBy", "VAEEncode"]),
    ("Nearest", ["VAEDecode", "ImageScaleBy", "VAEEncode"]),
])
def test_upscalers_map_to_nodes_and_back_to_their_a1111_name(upscaler, nodes):
    workflow = gen.txt2img_workflow(gen.resolve(small(hr_upscaler=upscaler)))
    added = [workflow[n]["class_type"] for n in ("15", "14", "16") if n in workflow]
    assert added == nodes
    method = passes.HIRES_UPSCALERS[upscaler][1]
    assert workflow["14"]["inputs"]["upscale_method"] == method
    info = parse_infotext(infotext_from_workflow(workflow, "9"))
    assert info["Hires upscaler"] == ("Lanczos" if upscaler == "None" else upscaler)  # A1111's None is Lanczos


def test_resize_to_hires_sampler_and_prompt_in_the_workflow_and_infotext():
    params = gen.resolve(small(hr_resize_x=96, hr_resize_y=0, hr_sampler_name="DPM++ 2M", hr_prompt="a blue square",
                               hr_negative_prompt="blurry", hr_second_pass_steps=0))
    workflow = gen.txt2img_workflow(params)
    assert workflow["14"]["class_type"] == "LatentUpscale"
    assert workflow["14"]["inputs"] == {"samples": ["3", 0], "upscale_method": "bilinear", "width": 96, "height": 0,
                                        "crop": "disabled"}
    hires = workflow["17"]["inputs"]
    assert (hires["sampler_name"], hires["scheduler"], hires["steps"]) == ("dpmpp_2m", "karras", 2)
    assert workflow["18"]["inputs"]["text"] == "a blue square" and hires["positive"] == ["18", 0]
    assert hires["negative"] == ["7", 0]  # the same negative prompt needs no second encoder
    info = parse_infotext(infotext_from_workflow(workflow, "9"), defaults=False)
    assert info["Hires resize-1"] == "96" and info["Hires resize-2"] == "0"
    assert info["Hires sampler"] == "DPM++ 2M" and info["Hires schedule type"] == "Karras"
    assert info["Hires prompt"] == "a blue square" and "Hires negative prompt" not in info
    assert "Hires steps" not in info and info["Prompt"] == "a red circle"
    both = gen.txt2img_workflow(gen.resolve(small(hr_resize_x=128, hr_resize_y=96, hr_upscaler="Lanczos")))
    assert both["14"]["class_type"] == "ImageScale" and both["14"]["inputs"]["crop"] == "center"
    assert passes.hires_size(64, 64, 2.0, 128, 96) == (128, 96)


@pytest.mark.parametrize("changes, field", [
    ({"hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"), ({"hr_scale": 9}, "hr_scale"), ({"hr_scale": "x"}, "hr_scale"),
    ({"hr_second_pass_steps": -1}, "hr_second_pass_steps"), ({"hr_resize_x": 1.5}, "hr_resize_x"),
    ({"hr_sampler_name": "Euler z"}, "hr_sampler_name"), ({"hr_scheduler": "Sideways"}, "hr_scheduler"),
    ({"hr_prompt": None}, "hr_prompt"), ({"width": 1024, "height": 1024, "hr_scale": 4.5}, "hr_scale"),
])
def test_bad_hires_settings_are_refused_naming_the_field(changes, field):
    with pytest.raises(BadRequest) as caught:
        gen.resolve(small(**changes))
    assert caught.value.field == field
    with pytest.raises(BadRequest, match="over the limit"):
        gen.resolve(small(batch_size=2), max_pixels=64 * 64 * 5)
    assert not gen.resolve(small(enable_hr=False, hr_upscaler="nonsense")).enable_hr  # unused settings: not checked


# -- running it -------------------------------------------------------------------------------------------

def test_hires_pass_upscales_the_txt2img_image_with_its_own_steps(registry, folders, checkpoint):
    executor = Executor(registry)
    params = gen.resolve(small())
    workflow = gen.txt2img_workflow(params)
    # also save the first pass, to compare it with what plain txt2img makes
    workflow["90"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
    workflow["91"] = {"class_type": "PreviewImage", "inputs": {"images": ["90", 0]}}
    events = []
    result = run(executor, workflow, events)
    path, final = saved_image(folders, result)
    assert final.shape == (128, 128, 3)
    _, first_pass = saved_image(folders, result, "91")
    _, plain = saved_image(folders, run(Executor(registry), gen.txt2img_workflow(
        gen.resolve(small(enable_hr=False)))))
    assert first_pass.shape == (64, 64, 3) and np.array_equal(first_pass, plain)
    # the second pass runs A1111's img2img steps: int(min(0.5, 0.999) * 4) + 1 of its 4-step schedule
    hires_progress = [d["value"] for n, d in events if n == "progress" and d["node"] == "17"]
    assert hires_progress == [1, 2, 3]
    assert [d["value"] for n, d in events if n == "progress" and d["node"] == "3"] == [1, 2]
    info = parse_infotext(read_png_metadata(path)["parameters"])
    assert (info["Size-1"], info["Size-2"], info["Steps"]) == ("64", "64", "2")
    assert (info["Hires upscale"], info["Hires steps"], info["Hires upscaler"]) == ("2", "4", "Latent")
    assert info["Denoising strength"] == "0.5" and info["Seed"] == "1234"

    # a hand-built second pass on the upscaled first pass gives the same image
    by_hand = copy.deepcopy(gen.txt2img_workflow(gen.resolve(small(enable_hr=False))))
    by_hand["50"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "upscale_method": "bilinear",
                                                                 "scale_by": 2.0}}
    by_hand["51"] = {"class_type": "KSampler", "inputs": {**by_hand["3"]["inputs"], "latent_image": ["50", 0],
                                                          "steps": 4, "denoise": 0.5}}
    by_hand["8"]["inputs"]["samples"] = ["51", 0]
    _, manual = saved_image(folders, run(Executor(registry), by_hand))
    assert np.array_equal(manual, final)


def test_pixel_upscaler_and_resize_to_give_the_asked_size(registry, folders, checkpoint):
    executor = Executor(registry)
    path, image = saved_image(folders, run(executor, gen.txt2img_workflow(
        gen.resolve(small(hr_upscaler="Lanczos", hr_resize_x=96, batch_size=2)))))
    assert image.shape == (96, 96, 3)
    assert not np.isnan(image).any() and image.std() > 0
    info = parse_infotext(read_png_metadata(path)["parameters"])
    assert info["Hires upscaler"] == "Lanczos" and info["Hires resize-1"] == "96" and info["Size-1"] == "64"


def test_hires_fix_from_the_a1111_api(folders, checkpoint, a1111_client):
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 5, "enable_hr": True,
            "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    response = a1111_client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert (info["width"], info["height"], info["denoising_strength"]) == (64, 64, 0.6)
    assert info["extra_generation_params"]["Hires upscale"] == "1.5"
    parsed = parse_infotext(info["infotexts"][0])
    assert parsed["Hires upscaler"] == "Latent" and parsed["Denoising strength"] == "0.6"
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).size == (96, 96)
    # A1111's default denoising strength when none is sent
    response = a1111_client.post("/sdapi/v1/txt2img", json={**body, "denoising_strength": None, "send_images": False})
    assert parse_infotext(json.loads(response.json()["info"])["infotexts"][0])["Denoising strength"] == "0.7"
    response = a1111_client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "R-ESRGAN 4x+"})
    assert response.status_code == 422 and "hr_upscaler" in response.text
    assert a1111_client.get("/sdapi/v1/upscalers").json()[0]["name"] == "None"
    assert {m["name"] for m in a1111_client.get("/sdapi/v1/latent-upscale-modes").json()} >= {"Latent"}
