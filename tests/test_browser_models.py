"""The Models tab in headless Chromium: the installed list with the checkpoint's family, a file added on
disk shown after Refresh, and deleted through the confirmation step."""
from __future__ import annotations

import re

import browser_app
import pytest
from browser_app import CHECKPOINT, SLOW, wait_until
from tiny_models import write_tiny_esrgan

pytestmark = pytest.mark.browser
browser, app, page = browser_app.browser, browser_app.app, browser_app.page


def cells(table, text: str):
    """The table's cells showing exactly `text`."""
    return table.locator("span.text").filter(has_text=re.compile(f"^{re.escape(text)}$"))


def test_models_tab_lists_refreshes_and_deletes_after_confirming(app, page):
    page.goto(app.url)
    page.get_by_role("tab", name="Models", exact=True).click(timeout=SLOW)
    panel = page.locator("[role=tabpanel]").filter(visible=True)
    table = panel.locator("#models-installed")
    cells(table, CHECKPOINT).wait_for()
    assert cells(table, "sd1").count() == 1  # the tiny checkpoint's family, from its header

    path = write_tiny_esrgan(app.ctx.folders.models_dir / "upscale_models", "4x-browser.pth")
    panel.get_by_role("button", name="Refresh", exact=True).click()
    cells(table, "4x-browser.pth").click()
    panel.get_by_role("button", name="Delete", exact=True).click()
    panel.get_by_text("Delete upscale_models/4x-browser.pth from disk?").wait_for()
    assert path.exists()  # not before the confirmation
    panel.locator("#models-confirm-delete").click()
    panel.get_by_text("Deleted upscale_models/4x-browser.pth").wait_for()
    wait_until(lambda: not path.exists(), timeout=10, what="the file to be deleted")
    assert cells(table, "4x-browser.pth").count() == 0
    assert page.js_errors == []
