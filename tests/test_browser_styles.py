"""The generation tabs' Styles controls in headless Chromium: a style picked after Refresh is applied at
Generate, "Apply styles to prompt" writes it into the prompt boxes, "Save style" adds the prompts."""
from __future__ import annotations

import browser_app
import pytest
from browser_app import FAST, SLOW
from inkwash.webui import prompt_styles
from inkwash.webui.prompt_styles import PromptStyle

pytestmark = pytest.mark.browser
browser, app, page = browser_app.browser, browser_app.app, browser_app.page


def test_a_style_is_applied_at_generate_written_into_the_prompt_and_saved(app, page):
    styles_file = app.ctx.data_dir / "styles.csv"
    prompt_styles.write_styles(styles_file, [PromptStyle("ink", "{prompt}, ink wash", "blurry")])
    page.goto(app.url + "/")
    panel = page.locator("[role=tabpanel]").filter(visible=True)
    panel.get_by_label("Prompt", exact=True).fill("a lighthouse")
    for label, value in (("number input for Sampling steps", 2), ("Seed (-1: random)", 1234)):
        panel.get_by_label(label, exact=True).fill(str(value))
        panel.get_by_label(label, exact=True).press("Tab")
    panel.get_by_role("button", name="Refresh", exact=True).click()  # rereads the styles file
    styles = panel.get_by_label("Styles", exact=True)
    styles.click()
    page.get_by_role("option", name="ink", exact=True).click(timeout=SLOW)
    styles.press("Escape")

    panel.get_by_role("button", name="Generate", exact=True).click()
    panel.locator("img[alt='seed 1234']").first.wait_for(timeout=SLOW)
    info = panel.get_by_label("Generation parameters", exact=True)
    page.wait_for_function("el => el.value.includes('Seed:')", arg=info.element_handle(), timeout=FAST)
    assert info.input_value().startswith("a lighthouse, ink wash\nNegative prompt: blurry\n")

    assert panel.get_by_text("ink", exact=True).count() == 1  # the selected style's token
    panel.get_by_role("button", name="Apply styles to prompt", exact=True).click()
    prompt = panel.get_by_label("Prompt", exact=True)
    page.wait_for_function("el => el.value === 'a lighthouse, ink wash'", arg=prompt.element_handle(), timeout=FAST)
    assert panel.get_by_label("Negative prompt", exact=True).input_value() == "blurry"
    assert panel.get_by_text("ink", exact=True).count() == 0  # the selection is cleared

    panel.get_by_text("Save style", exact=True).first.click()  # opens the accordion
    panel.get_by_label("Style name", exact=True).fill("lighthouse")
    panel.get_by_role("button", name="Save style", exact=True).click()
    panel.get_by_text("Saved style 'lighthouse'.").wait_for(timeout=FAST)
    assert prompt_styles.read_styles(styles_file)["lighthouse"] == PromptStyle(
        "lighthouse", "a lighthouse, ink wash", "blurry")
    assert page.js_errors == []
