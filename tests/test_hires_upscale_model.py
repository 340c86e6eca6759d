"""Hires fix with an upscale model (A1111's hr_upscaler naming a model file): the first pass decoded,
upscaled by the model, resized to the hires size, encoded and sampled again; infotext names the model."""
import pytest
from PIL import Image

from inkwash.nodes.executor import Executor
from inkwash.nodes.formats.png_metadata import parse_infotext, read_png_metadata
from inkwash.webui import generation as gen
from inkwash.webui.generation import BadRequest, GenerationParams
from tiny_models import write_tiny_esrgan

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_model_cache")
MODEL = "4x-tiny-esrgan"


def small(**changes) -> GenerationParams:
    values = {"prompt": "a red circle", "negative_prompt": "blurry", "checkpoint": "tiny-sd1.safetensors",
              "sampler_name": "euler", "steps": 2, "cfg_scale": 6.5, "seed": 1234, "width": 64, "height": 64,
              "enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.5,
              "hr_upscaler": MODEL}
    values.update(changes)
    return GenerationParams(**values)


def test_hires_fix_with_an_upscale_model(registry, folders, checkpoint):
    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".pth")
    workflow = gen.txt2img_workflow(gen.resolve(small(clip_skip=2), folders))
    assert workflow["20"]["class_type"] == "CLIPSetLastLayer"  # clip skip keeps its node beside the model's
    chain = [workflow[n]["class_type"] for n in ("15", "25", "14", "16")]
    assert chain == ["VAEDecode", "ImageUpscaleWithModel", "ImageScale", "VAEEncode"]
    assert workflow["24"]["inputs"]["model_name"] == MODEL + ".pth"
    assert (workflow["14"]["inputs"]["width"], workflow["14"]["inputs"]["height"]) == (128, 128)
    result = Executor(registry).execute(workflow)
    assert result.status == "success", result.error
    saved = result.outputs["9"]["images"][0]
    path = folders.output_dir / saved["subfolder"] / saved["filename"]
    assert Image.open(path).size == (128, 128)
    info = parse_infotext(read_png_metadata(path)["parameters"])
    assert info["Hires upscaler"] == MODEL and info["Size-1"] == "64"


def test_the_hires_upscaler_choices_offer_the_model_files(folders):
    from inkwash.webui.tabs import pass_inputs

    ctx = type("Ctx", (), {"folders": folders})()
    assert MODEL not in pass_inputs.hires_upscaler_choices(ctx)
    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".pth")
    refreshed = pass_inputs.refreshed(ctx, "hr_upscaler", MODEL)
    assert refreshed.choices[-1] == (MODEL, MODEL) and refreshed.value == MODEL
    assert "Latent" in pass_inputs.hires_upscaler_choices(ctx)


def test_an_unknown_model_name_is_refused_listing_the_models(folders, checkpoint):
    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".pth")
    with pytest.raises(BadRequest, match=f"unknown upscaler 'R-ESRGAN 4x\\+'.*{MODEL}") as caught:
        gen.resolve(small(hr_upscaler="R-ESRGAN 4x+"), folders)
    assert caught.value.field == "hr_upscaler"


def test_the_hires_sampler_dropdowns_offer_a1111_names_the_workflow_gets_comfyui_names(folders, checkpoint):
    import gradio as gr
    from inkwash.nodes.formats.sampler_names import SAMPLER_NAMES
    from inkwash.webui.tabs import pass_inputs

    ctx = type("Ctx", (), {"folders": folders})()
    with gr.Blocks():
        inputs = pass_inputs.hires_inputs(ctx)
    samplers = [value for _, value in inputs["hr_sampler_name"].choices]
    schedules = [value for _, value in inputs["hr_scheduler"].choices]
    assert "DPM++ 2M" in samplers and "Karras" in schedules
    assert not [name for name in samplers if name.endswith("_gpu") or name in SAMPLER_NAMES]  # no ComfyUI names
    resolved = gen.resolve(small(hr_upscaler="Latent", hr_sampler_name="DPM++ 2M", hr_scheduler="Karras"), folders)
    workflow = gen.txt2img_workflow(resolved)
    assert (workflow["17"]["inputs"]["sampler_name"], workflow["17"]["inputs"]["scheduler"]) == ("dpmpp_2m", "karras")


def test_hires_fix_with_an_upscale_model_from_the_a1111_api(folders, checkpoint, registry, tmp_path):
    import base64
    import io
    import json

    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from inkwash.webui import a1111_api, a1111_extras
    from inkwash.webui.context import ServerContext
    from inkwash.webui.events import EventHub
    from inkwash.webui.jobs import JobQueue

    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".pth")
    hub = EventHub()
    queue = JobQueue(tmp_path / "jobs.db", registry, hub)
    queue.start()
    app = FastAPI()
    ctx = ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=tmp_path)
    app.include_router(a1111_extras.router(ctx))  # as the server: its /upscalers lists the model files
    app.include_router(a1111_api.router(ctx))
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 5, "enable_hr": True,
            "hr_scale": 1.5, "hr_upscaler": MODEL, "hr_second_pass_steps": 2, "denoising_strength": 0.5}
    try:
        with TestClient(app) as client:
            assert MODEL in [u["name"] for u in client.get("/sdapi/v1/upscalers").json()]
            response = client.post("/sdapi/v1/txt2img", json=body)
    finally:
        queue.close()
    assert response.status_code == 200, response.text
    assert parse_infotext(json.loads(response.json()["info"])["infotexts"][0])["Hires upscaler"] == MODEL
    assert Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).size == (96, 96)


def test_resolving_an_upscale_model_name_needs_no_torch(folders, checkpoint):
    """The generation layer reads the upscale models' names off the folder, not the library that runs them."""
    import subprocess
    import sys

    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".pth")
    code = ("import sys\n"
            "from inkwash.nodes import folders\n"
            "from inkwash.webui import parameters as p\n"
            f"f = folders.configure(models_dir={str(folders.models_dir)!r})\n"
            f"print(p.hires_upscaler({MODEL!r}, f), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [MODEL + ".pth", "False"]
