"""The Extras tab in headless Chromium: upload a picture, pick the upscale model, Generate; the upscaled
image shows with its postprocess parameters and the job is in the queue's history."""
from __future__ import annotations

import browser_app
import pytest
from browser_app import FAST, SLOW, serve_app
from PIL import Image, ImageDraw
from tiny_models import write_tiny_esrgan

pytestmark = pytest.mark.browser
browser, page = browser_app.browser, browser_app.page
MODEL = "4x-tiny-esrgan"


@pytest.fixture(scope="module")
def app(browser, tmp_path_factory):
    """The app with a tiny upscale model in models/upscale_models (the tab lists models when it is built)."""
    root = tmp_path_factory.mktemp("app")
    write_tiny_esrgan(root / "models" / "upscale_models", MODEL + ".safetensors")
    with serve_app(root) as running:
        yield running


def test_extras_tab_upscales_an_uploaded_image_with_the_model(app, page, tmp_path):
    source = tmp_path / "small.png"
    picture = Image.new("RGB", (48, 32), (70, 120, 200))
    ImageDraw.Draw(picture).ellipse((8, 4, 40, 28), fill=(240, 200, 60))
    picture.save(source)

    page.goto(app.url + "/")
    page.get_by_role("tab", name="Extras", exact=True).click()
    page.locator("#extras_image input[type=file]").set_input_files(str(source))
    page.locator("#extras_image img").first.wait_for(timeout=SLOW)  # the upload is shown
    upscaler = page.locator("#extras_upscaler_1 input")
    upscaler.click()
    page.get_by_role("option", name=MODEL, exact=True).click()
    scale = page.get_by_label("number input for Scale by", exact=True)
    scale.fill("2")
    scale.press("Tab")
    page.locator("#extras_generate").click()

    result = page.locator("#extras_gallery img").first
    result.wait_for(timeout=SLOW)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=result.element_handle(), timeout=FAST)
    info = page.locator("#extras_info textarea")
    assert info.input_value() == f"Postprocess upscale by: 2, Postprocess upscaler: {MODEL}"
    job = app.ctx.queue.history()[-1]
    assert job.status == "success", job.error
    (saver,) = [node_id for node_id, node in job.workflow.items() if node["class_type"] == "SaveImage"]
    saved = job.outputs[saver]["images"][0]
    with Image.open(app.ctx.folders.output_dir / saved["subfolder"] / saved["filename"]) as image:
        assert image.size == (96, 64)
    assert page.js_errors == []
