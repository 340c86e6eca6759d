"""The whole app (create_app with the Gradio tabs) served on a free port in a thread, over a tiny checkpoint
(or a given models folder) in temporary folders, and a headless Chromium to drive it: fixtures and helpers
for the browser tests and for tests/screenshots.py.

Bind the fixtures in a test module (`browser, app, page = browser_app.browser, ...`). Without
/usr/bin/chromium or Playwright the fixtures skip the tests, saying which is missing.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
VIEWPORT = {"width": 1400, "height": 900}
CHECKPOINT = "inkwash-demo.safetensors"  # the name the tabs and the editor pick by default
# The machine may be busy with other work: waits are long, and only as long as needed.
SLOW = 180_000  # ms, for anything that runs the model or starts the page
FAST = 30_000  # ms, for what only the browser does


def skip_without_browser() -> None:
    """Skip the calling test when there is nothing to drive a browser with."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@dataclass
class RunningApp:
    ctx: Any  # ServerContext
    options: Any  # ServeOptions
    url: str  # http://127.0.0.1:PORT


@contextmanager
def serve_app(root: Path, credentials=None, models_dir: Path | None = None) -> Iterator[RunningApp]:
    """create_context + create_app (with the UI) over folders under `root` holding a tiny checkpoint (or
    over `models_dir`, read only), served by uvicorn in a thread until the block ends. The global folders
    come back as they were."""
    import uvicorn
    from inkwash.nodes import folders as folders_module
    from inkwash.webui.serve_options import ServeOptions
    from inkwash.webui.server import create_app, create_context
    from tiny_models import write_tiny_checkpoint

    if models_dir is None:
        models_dir = root / "models"
        (models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_tiny_checkpoint(models_dir / "checkpoints", name=CHECKPOINT)
    port = free_port()
    options = ServeOptions(port=port, credentials=credentials, models_dir=models_dir,
                           output_dir=root / "output", input_dir=root / "input", data_dir=root / "data")
    previous = folders_module.current()
    try:
        ctx = create_context(options)
        ctx.folders.temp_dir = root / "temp"  # previews: not in the repo's temp/
        ctx.folders.temp_dir.mkdir(parents=True, exist_ok=True)
        app = create_app(ctx, options, with_ui=True)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        try:
            wait_until(lambda: server.started or not thread.is_alive(), timeout=60, what="the server to start")
            assert server.started, "the server did not start"
            yield RunningApp(ctx, options, f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            thread.join(30)
    finally:
        folders_module._current = previous


# -- fixtures --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    skip_without_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def app(browser, tmp_path_factory) -> Iterator[RunningApp]:
    """The app without credentials, shared by a module's tests (starting it loads Gradio and the model)."""
    with serve_app(tmp_path_factory.mktemp("app")) as running:
        yield running


@pytest.fixture
def page(browser):
    """A fresh browser context and page at the screenshot size; the page fails the test on a JS error."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(FAST)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.js_errors = errors
    yield opened
    context.close()
