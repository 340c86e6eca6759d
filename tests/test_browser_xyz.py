"""The X/Y/Z plot in the txt2img tab in headless Chromium: picking it in Script, a seed axis typed as a range,
Generate showing the grid before the cells, and "Export grid workflow" giving the workflow that ran."""
from __future__ import annotations

import json

import browser_app
import pytest
from browser_app import FAST, SLOW

pytestmark = pytest.mark.browser
browser, app, page = browser_app.browser, browser_app.app, browser_app.page


def test_script_dropdown_plots_a_seed_axis_and_exports_the_grid_workflow(app, page):
    page.goto(app.url + "/")
    panel = page.locator("[role=tabpanel]").filter(visible=True)
    panel.get_by_label("Prompt", exact=True).fill("a lighthouse")
    for label, value in (("number input for Sampling steps", 1), ("Seed (-1: random)", 50),
                         ("number input for Width", 64), ("number input for Height", 64)):
        panel.get_by_label(label, exact=True).fill(str(value))
        panel.get_by_label(label, exact=True).press("Tab")
    assert not panel.get_by_label("X values", exact=True).is_visible()
    script = panel.get_by_label("Script", exact=True)
    script.click()
    page.get_by_role("option", name="X/Y/Z plot", exact=True).click()
    panel.get_by_label("X values", exact=True).fill("50-51")

    panel.get_by_role("button", name="Generate", exact=True).click()
    panel.locator("img[alt='seed 51']").first.wait_for(timeout=SLOW)
    job = app.ctx.queue.history()[-1]
    assert job.status == "success", job.error
    classes = [node["class_type"] for node in job.workflow.values()]
    assert classes.count("KSampler") == 2 and classes.count("CheckpointLoaderSimple") == 1
    info = panel.get_by_label("Generation parameters", exact=True)
    page.wait_for_function("el => el.value.includes('Script: X/Y/Z plot')", arg=info.element_handle(), timeout=FAST)
    assert "X Type: Seed" in info.input_value() and "X Values: 50-51" in info.input_value()

    panel.get_by_role("button", name="Export grid workflow", exact=True).click()
    link = panel.locator("a[href*='xyz-grid']").first
    link.wait_for(timeout=SLOW)
    response = page.request.get(link.evaluate("a => a.href"))
    assert response.ok and json.loads(response.text()) == job.workflow
    assert page.js_errors == []
