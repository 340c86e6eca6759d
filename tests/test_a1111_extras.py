"""A1111's Extras API (/sdapi/v1/upscalers, /extra-single-image, /extra-batch-images) on the queue, with a
tiny ESRGAN-shaped upscale model."""
import base64
import io

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from inkwash.nodes.registry import core_nodes
from inkwash.webui import a1111_extras, extras
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.jobs import JobQueue
from tiny_models import TinyRRDBNet, write_tiny_esrgan

MODEL = "4x-tiny-esrgan"


@pytest.fixture
def ctx(folders, tmp_path, one_thread, fresh_model_cache):
    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".safetensors")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    registry, hub = core_nodes(), EventHub()
    queue = JobQueue(data_dir / "jobs.db", registry, hub)
    queue.start()
    yield ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=data_dir,
                        max_upload_bytes=2 * 2**20, max_pixels=256 * 256)
    queue.close()


@pytest.fixture
def client(ctx):
    app = FastAPI()
    app.include_router(a1111_extras.router(ctx))
    with TestClient(app) as test_client:
        yield test_client


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode(encoded: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


def test_upscalers_lists_builtins_then_model_files_in_a1111s_shape(client, ctx):
    items = client.get("/sdapi/v1/upscalers").json()
    assert [item["name"] for item in items] == ["None", "Lanczos", "Nearest", MODEL]
    assert all(set(item) == {"name", "model_name", "model_path", "model_url", "scale"} for item in items)
    model = items[-1]
    assert model["model_name"] == MODEL and model["scale"] == 4
    assert model["model_path"] == str(ctx.folders.models_dir / "upscale_models" / (MODEL + ".safetensors"))


def test_single_image_with_the_model_scales_by_the_factor(client, ctx):
    image = noise(12, 10)
    response = client.post("/sdapi/v1/extra-single-image",
                           json={"image": png_b64(image), "upscaler_1": MODEL, "upscaling_resize": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["html_info"] == f"<p>Postprocess upscale by: 4, Postprocess upscaler: {MODEL}</p>"
    out = decode(body["image"])
    assert out.size == (48, 40)
    with torch.no_grad():  # a 4x model at factor 4: one pass, the Lanczos resize to the same size is a no-op
        expected = TinyRRDBNet()(torch.from_numpy(as_array(image)).movedim(-1, 0)[None]).clamp(0, 1)
    assert np.abs(as_array(out) - expected[0].movedim(0, -1).numpy()).max() <= 1.5 / 255
    assert not list((ctx.folders.input_dir / "extras").glob("*"))  # inputs aren't kept
    assert not list(ctx.folders.output_dir.rglob("*.png"))  # nor are the results (A1111's API doesn't save)


def test_single_image_resize_to_with_crop_and_a_second_upscaler_blended(client):
    image = noise(16, 8)
    fields = {"image": png_b64(image), "resize_mode": 1, "upscaling_resize_w": 24, "upscaling_resize_h": 24,
              "upscaling_crop": True, "upscaler_1": "Nearest", "upscaler_2": "Lanczos"}
    nearest = decode(client.post("/sdapi/v1/extra-single-image", json=fields).json()["image"])
    lanczos = decode(client.post("/sdapi/v1/extra-single-image",
                                 json={**fields, "upscaler_1": "Lanczos"}).json()["image"])
    response = client.post("/sdapi/v1/extra-single-image", json={**fields, "extras_upscaler_2_visibility": 0.25})
    blended = decode(response.json()["image"])
    assert nearest.size == lanczos.size == blended.size == (24, 24)  # 48x24 cropped to the center
    expected = 0.75 * as_array(nearest) + 0.25 * as_array(lanczos)
    assert np.abs(as_array(blended) - expected).max() <= 1 / 255 + 1e-6
    assert "Postprocess upscale to: 24x24" in response.json()["html_info"]
    assert "Postprocess upscaler 2: Lanczos" in response.json()["html_info"]
    # nearest at 3x: each source pixel becomes a 3x3 block; the crop starts 12 px in (source column 4)
    assert as_array(nearest)[0, 0].tolist() == as_array(image)[0, 4].tolist()


def test_resize_to_without_crop_keeps_the_aspect_ratio(client):
    response = client.post("/sdapi/v1/extra-single-image",
                           json={"image": png_b64(noise(16, 8)), "resize_mode": 1, "upscaling_resize_w": 24,
                                 "upscaling_resize_h": 24, "upscaling_crop": False, "upscaler_1": "Lanczos"})
    assert decode(response.json()["image"]).size == (48, 24)


def test_upscaler_none_returns_the_image_unchanged(client):
    image = noise(9, 7)
    body = client.post("/sdapi/v1/extra-single-image", json={"image": png_b64(image), "upscaler_1": "None",
                                                              "upscaler_2": "Lanczos",
                                                              "extras_upscaler_2_visibility": 1}).json()
    assert np.array_equal(np.asarray(decode(body["image"])), np.asarray(image))
    assert body["html_info"] == ""


def test_batch_images_come_back_in_order_one_job(client, ctx):
    images = [noise(8, 8, seed=1), noise(10, 6, seed=2)]
    response = client.post("/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": png_b64(im), "name": f"{i}.png"} for i, im in enumerate(images)],
        "upscaler_1": MODEL, "upscaling_resize": 2})
    assert response.status_code == 200, response.text
    outs = [decode(encoded) for encoded in response.json()["images"]]
    assert [o.size for o in outs] == [(16, 16), (20, 12)]
    assert len(ctx.queue.history()) == 1


def test_a_factor_above_the_models_scale_runs_it_again(ctx):
    params = extras.ExtrasParams(upscaler_1=MODEL, upscaling_resize=6)
    workflow, _ = extras.build_workflow(params, ctx.folders, [("x.png", 8, 8)], save=False, max_pixels=512 * 512)
    classes = [node["class_type"] for node in workflow.values()]
    assert classes.count("ImageUpscaleWithModel") == 2 and classes.count("UpscaleModelLoader") == 1
    resize = next(node for node in workflow.values() if node["class_type"] == "ImageScale")
    assert (resize["inputs"]["width"], resize["inputs"]["height"]) == (48, 48)


@pytest.mark.parametrize("fields, field_name", [
    ({"upscaler_1": "4x-missing"}, "upscaler_1"),
    ({"upscaler_1": "Lanczos", "upscaler_2": "nope", "extras_upscaler_2_visibility": 0.5}, "upscaler_2"),
    ({"upscaler_1": "Lanczos", "gfpgan_visibility": 0.5}, "gfpgan_visibility"),
    ({"upscaler_1": "Lanczos", "image": "not base64!"}, "image"),
    ({"upscaler_1": "Lanczos", "upscaling_resize": 8, "image": None}, "upscaling_resize"),  # 256x8 > limit
])
def test_bad_requests_are_422_naming_the_field(client, fields, field_name):
    body = {"image": png_b64(noise(256, 256)), **{k: v for k, v in fields.items() if v is not None}}
    response = client.post("/sdapi/v1/extra-single-image", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field_name


def test_out_of_range_fields_are_refused_by_the_schema(client):
    response = client.post("/sdapi/v1/extra-single-image",
                           json={"image": png_b64(noise(4, 4)), "upscaling_resize": 9, "upscaler_1": "Lanczos"})
    assert response.status_code == 422
    assert "upscaling_resize" in response.text


def test_the_app_serves_the_extras_routes_before_the_generation_api(folders, tmp_path, fresh_model_cache):
    from inkwash.webui.serve_options import ServeOptions
    from inkwash.webui.server import create_app, create_context

    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".safetensors")
    options = ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir, input_dir=folders.input_dir,
                           data_dir=tmp_path / "data")
    app = create_app(create_context(options), options, with_ui=False)
    with TestClient(app, base_url="http://127.0.0.1:7860") as client:
        assert [item["name"] for item in client.get("/sdapi/v1/upscalers").json()][-1] == MODEL
        response = client.post("/sdapi/v1/extra-single-image",
                               json={"image": png_b64(noise(6, 4)), "upscaler_1": "Lanczos", "upscaling_resize": 2})
        assert response.status_code == 200 and decode(response.json()["image"]).size == (12, 8)
