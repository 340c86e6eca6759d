"""The tabs check typed numbers as the APIs do, in headless Chromium: a number out of a slider's range
is refused with a note naming the field (the browser sets the slider back to its nearest end), and a
size that is not a multiple of 8 is generated rounded down, saying so."""
from __future__ import annotations

import browser_app
import pytest
from browser_app import FAST, SLOW

pytestmark = pytest.mark.browser
browser, app, page = browser_app.browser, browser_app.app, browser_app.page


def type_number(panel, label: str, value: int):
    field = panel.get_by_label(f"number input for {label}", exact=True)
    field.fill(str(value))
    field.press("Tab")  # the slider takes (and clamps) the value when the box loses focus
    return field


def test_typed_numbers_are_checked_as_the_apis_check_them(app, page):
    page.goto(app.url + "/")
    panel = page.locator("[role=tabpanel]").filter(visible=True)
    panel.get_by_label("Prompt", exact=True).fill("a red circle")

    width = type_number(panel, "Width", 0)
    page.get_by_text("width: must be between 64 and 2048 pixels, got 0; set to 64").wait_for(timeout=FAST)
    assert width.input_value() == "64"
    steps = type_number(panel, "Sampling steps", 0)
    page.get_by_text("steps: must be between 1 and 1000, got 0; set to 1").wait_for(timeout=FAST)
    assert steps.input_value() == "1"

    type_number(panel, "Width", 100)
    type_number(panel, "Height", 64)
    type_number(panel, "Sampling steps", 2)
    seed = panel.get_by_label("Seed (-1: random)", exact=True)
    seed.fill("77")
    seed.press("Tab")
    panel.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text("width 100 was rounded down to 96").wait_for(timeout=SLOW)
    panel.locator("img[alt='seed 77']").first.wait_for(timeout=SLOW)
    job = app.ctx.queue.history()[-1]
    assert job.status == "success", job.error
    assert job.workflow["5"]["inputs"]["width"] == 96 and job.workflow["5"]["inputs"]["height"] == 64
    assert job.workflow["3"]["inputs"]["steps"] == 2
    assert page.js_errors == []
