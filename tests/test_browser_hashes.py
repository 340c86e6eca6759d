"""Model hashes in headless Chromium: PNG Info's "Send to txt2img" picks the checkpoint whose hash the
infotext names, under its new name, keeping the sent values; the Models tab lists the hashes."""
from __future__ import annotations

import hashlib

import browser_app
import pytest
from browser_app import FAST, SLOW
from inkwash.nodes.formats.png_metadata import format_infotext
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tiny_models import tiny_sd1, write_tiny_checkpoint

pytestmark = pytest.mark.browser
browser, app, page = browser_app.browser, browser_app.app, browser_app.page


def test_png_info_sends_the_renamed_checkpoint_its_model_hash_names(app, page, tmp_path):
    renamed = write_tiny_checkpoint(app.options.models_dir / "checkpoints", "renamed.safetensors", tiny_sd1(seed=4))
    short = hashlib.sha256(renamed.read_bytes()).hexdigest()[:10]
    # CFG 5 is the demo model's default: switching away from it must not reset a sent value
    infotext = format_infotext("a red circle", "", {"Steps": 3, "Sampler": "Euler", "CFG scale": 5, "Seed": 7,
                                                    "Size": "64x64", "Model hash": short, "Model": "before-rename"})
    picture = tmp_path / "made-elsewhere.png"
    metadata = PngInfo()
    metadata.add_text("parameters", infotext)
    Image.new("RGB", (64, 64), (10, 20, 30)).save(picture, pnginfo=metadata)

    page.goto(app.url + "/")
    page.get_by_role("tab", name="PNG Info", exact=True).click()
    panel = page.locator("[role=tabpanel]").filter(visible=True)
    panel.locator("input[type=file]").first.set_input_files(str(picture))
    parameters = panel.get_by_label("Parameters", exact=True)
    page.wait_for_function("el => el.value.includes('Model hash')", arg=parameters.element_handle(), timeout=SLOW)
    panel.get_by_role("button", name="Send to txt2img", exact=True).click()

    txt2img = page.locator("[role=tabpanel]").filter(visible=True)
    checkpoint = txt2img.get_by_label("Checkpoint", exact=True)
    page.wait_for_function("([el, title]) => el.value === title",
                           arg=[checkpoint.element_handle(), f"renamed.safetensors [{short}]"], timeout=FAST)
    page.wait_for_timeout(1000)  # the checkpoint's change event has run
    assert txt2img.get_by_label("number input for CFG scale", exact=True).input_value() == "5"
    assert txt2img.get_by_label("number input for Sampling steps", exact=True).input_value() == "3"
    assert txt2img.get_by_label("Prompt", exact=True).input_value() == "a red circle"

    page.get_by_role("tab", name="Models", exact=True).click()
    models = page.locator("[role=tabpanel]").filter(visible=True)
    models.get_by_role("button", name="Refresh", exact=True).click()
    models.get_by_text(short, exact=True).wait_for(timeout=SLOW)
    assert page.js_errors == []
