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


def test_models_tab_downloads_from_a_url_and_shows_its_progress(app, page, tmp_path):
    import functools
    import http.server
    import threading

    (tmp_path / "served.safetensors").write_bytes(b"weights " * 4096)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/served.safetensors"
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Models", exact=True).click(timeout=SLOW)
        panel = page.locator("[role=tabpanel]").filter(visible=True)
        panel.locator("#models-source textarea, #models-source input").first.fill(url)
        panel.locator("#models-download").click()
        cells(panel.locator("#models-downloads"), "done").wait_for()  # the timer shows the download's end
        assert cells(panel.locator("#models-downloads"), url).count() == 1
        target = app.ctx.folders.models_dir / "checkpoints" / "served.safetensors"
        assert target.read_bytes() == b"weights " * 4096
        panel.get_by_role("button", name="Refresh", exact=True).click()
        cells(panel.locator("#models-installed"), "served.safetensors").wait_for()
    finally:
        server.shutdown()
        server.server_close()
    assert page.js_errors == []
