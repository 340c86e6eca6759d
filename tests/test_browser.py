"""The assembled app (create_app with the Gradio tabs) in headless Chromium: txt2img and inpaint through
their tabs, the graph editor at /graph/, and the login page in front of it all. The txt2img and graph
editor tests write docs/screenshots/ once their checks pass, so the README's pictures stay current."""
from __future__ import annotations

import json
import re
from pathlib import Path

import browser_app
import httpx
import pytest
from browser_app import FAST, SLOW, save_screenshot, serve_app
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.browser
# the shared fixtures: one app for the module (no credentials), one Chromium, a fresh page per test
browser, app, page = browser_app.browser, browser_app.app, browser_app.page


def visible_tab(page):
    """The open tab's panel: every generation tab has the same labels, only one panel shows."""
    return page.locator("[role=tabpanel]").filter(visible=True)


def set_number(panel, label: str, value: int) -> None:
    field = panel.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Tab")  # Gradio takes the value when the field loses focus


def generate_and_wait(page, panel, seed: int) -> str:
    """Click Generate and wait for the result with this seed to show; return its infotext."""
    panel.get_by_role("button", name="Generate", exact=True).click()
    result = panel.locator(f"img[alt='seed {seed}']").first
    result.wait_for(timeout=SLOW)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=result.element_handle(), timeout=FAST)
    info = panel.get_by_label("Generation parameters", exact=True)
    page.wait_for_function("el => el.value.includes('Seed:')", arg=info.element_handle(), timeout=FAST)
    return info.input_value()


def finished_job(ctx):
    job = ctx.queue.history()[-1]
    assert job.status == "success", job.error
    return job


def test_txt2img_tab_generates_an_image_with_its_parameters(app, page):
    page.goto(app.url + "/")
    panel = visible_tab(page)
    prompt = "a lighthouse on a cliff at dusk"
    panel.get_by_label("Prompt", exact=True).fill(prompt)
    set_number(panel, "number input for Sampling steps", 3)
    set_number(panel, "Seed (-1: random)", 1234)

    info = generate_and_wait(page, panel, seed=1234)

    assert info.startswith(prompt)
    assert "Steps: 3," in info and "Seed: 1234," in info and "Model: inkwash-demo" in info
    job = finished_job(app.ctx)
    assert job.workflow["6"]["inputs"]["text"] == prompt
    assert job.workflow["3"]["inputs"]["steps"] == 3 and job.workflow["3"]["inputs"]["seed"] == 1234
    saved = job.outputs["9"]["images"][0]
    assert (app.ctx.folders.output_dir / saved["subfolder"] / saved["filename"]).is_file()
    assert page.js_errors == []

    page.evaluate("() => window.scrollTo(0, 0)")
    save_screenshot(page, "txt2img", full_page=True)


def test_inpaint_tab_repaints_the_painted_area(app, page, tmp_path):
    init = tmp_path / "init.png"
    picture = Image.new("RGB", (128, 128), (70, 120, 200))
    ImageDraw.Draw(picture).ellipse((32, 32, 96, 96), fill=(240, 200, 60))
    picture.save(init)

    page.goto(app.url + "/")
    page.get_by_role("tab", name="inpaint", exact=True).click()
    panel = visible_tab(page)
    # The editor zooms to fit what it shows: a new zoom level says the upload is on the canvas.
    zoom = panel.get_by_text(re.compile(r"^\d+%$"))
    blank_zoom = zoom.inner_text()
    panel.locator("input[type=file]").first.set_input_files(str(init))  # the image editor's upload
    page.wait_for_function("([el, before]) => el.textContent.trim() !== before",
                           arg=[zoom.element_handle(), blank_zoom], timeout=SLOW)
    canvas = panel.locator("canvas").first
    panel.get_by_role("button", name="Brush", exact=True).click()
    # one stroke across the middle of the picture (the editor fits it in the middle of its canvas)
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2 - 40, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x + 8 * step, y + step)
    page.mouse.up()
    set_number(panel, "number input for Sampling steps", 2)
    set_number(panel, "Seed (-1: random)", 77)

    info = generate_and_wait(page, panel, seed=77)

    assert "Seed: 77," in info and "Denoising strength:" in info
    job = finished_job(app.ctx)
    classes = {node["class_type"]: node for node in job.workflow.values()}
    assert "SetLatentNoiseMask" in classes and "LoadImageMask" in classes
    mask_file = app.ctx.folders.input_dir / classes["LoadImageMask"]["inputs"]["image"]
    with Image.open(mask_file) as opened:
        mask = opened.convert("L").resize((128, 128))
    painted = sum(1 for value in mask.tobytes() if value > 127) / (128 * 128)
    assert 0.02 < painted < 0.9, painted  # the stroke, not nothing and not everything
    assert mask.getpixel((64, 64)) > 127 and mask.getpixel((2, 2)) < 128
    saved = job.outputs["9"]["images"][0]
    assert (app.ctx.folders.output_dir / saved["subfolder"] / saved["filename"]).is_file()
    assert page.js_errors == []


def test_graph_editor_opens_and_runs_txt2img(app, page):
    from inkwash.webui import graph_editor

    if graph_editor.frontend_dir() is None:
        pytest.skip("comfyui-frontend-package is not installed")
    page.goto(app.url + "/graph/")
    page.wait_for_selector("canvas", timeout=SLOW)
    page.wait_for_function("() => window.app?.graph?._nodes?.some(n => n.type === 'KSampler')", timeout=SLOW)
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    txt2img = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    assert {k: v["class_type"] for k, v in prompt.items()} == {k: v["class_type"] for k, v in txt2img.items()}

    page.evaluate("""() => {
        window.__done = 0;
        app.api.addEventListener('execution_success', () => { window.__done += 1 });
        const sampler = app.graph._nodes.find(n => n.type === 'KSampler');
        sampler.widgets.find(w => w.name === 'steps').value = 3;
        sampler.widgets.find(w => w.name === 'seed').value = 1234;
        sampler.widgets.find(w => w.name === 'control_after_generate').value = 'fixed';
    }""")
    page.evaluate("async () => { await app.queuePrompt(0, 1) }")
    page.wait_for_function("() => window.__done >= 1", timeout=SLOW)
    page.wait_for_function("() => Array.from(document.images).some(i => i.src.includes('/view?') && i.complete"
                           " && i.naturalWidth === 128)", timeout=FAST)
    job = finished_job(app.ctx)
    assert job.extra.get("source") == "comfy"
    assert job.workflow["3"]["inputs"]["steps"] == 3 and job.workflow["3"]["inputs"]["seed"] == 1234
    assert page.js_errors == []

    # For the picture: the whole graph at a zoom that draws the nodes' text, without the frame counter.
    page.evaluate("""async () => {
        await app.extensionManager.setting.set('Comfy.Graph.CanvasInfo', false);
        const nodes = app.graph._nodes, box = app.canvas.canvas.getBoundingClientRect();
        const left = Math.min(...nodes.map(n => n.pos[0]));
        const right = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
        const top = Math.min(...nodes.map(n => n.pos[1]));
        const bottom = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
        const scale = 0.62, sidebar = 56;
        app.canvas.ds.scale = scale;
        app.canvas.ds.offset = [(box.width + sidebar) / 2 / scale - (left + right) / 2,
                                box.height / 2 / scale - (top + bottom) / 2];
        app.canvas.setDirty(true, true);
    }""")
    page.wait_for_timeout(1000)  # a few frames
    save_screenshot(page, "graph-editor")


def test_login_guards_the_ui_and_the_apis(browser, tmp_path):
    from inkwash.webui.auth import Credentials

    credentials = Credentials.from_auth_args("ann:secret", iterations=1000)
    with serve_app(tmp_path, credentials=credentials) as running:
        context = browser.new_context()
        context.set_default_timeout(FAST)
        try:
            login = context.new_page()
            login.goto(running.url + "/")
            assert login.url.split("?")[0] == running.url + "/login"
            login.get_by_label("User").fill("ann")
            login.get_by_label("Password").fill("wrong")
            login.get_by_role("button", name="Sign in").click()
            login.get_by_text("Wrong user name or password.").wait_for()
            assert login.url.split("?")[0] == running.url + "/login"

            login.get_by_label("User").fill("ann")
            login.get_by_label("Password").fill("secret")
            login.get_by_role("button", name="Sign in").click()
            login.get_by_role("tab", name="txt2img", exact=True).wait_for(timeout=SLOW)
            assert login.url == running.url + "/"
            visible_tab(login).get_by_role("button", name="Generate", exact=True).wait_for()
        finally:
            context.close()

        workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
        workflow["3"]["inputs"].update(steps=1, seed=1)
        workflow["5"]["inputs"].update(width=64, height=64)
        with httpx.Client(base_url=running.url, timeout=60) as client:
            assert client.get("/sdapi/v1/sd-models").status_code == 401
            assert client.post("/prompt", json={"prompt": workflow}).status_code == 401
            assert client.get("/sdapi/v1/sd-models", auth=("ann", "wrong")).status_code == 401
            models = client.get("/sdapi/v1/sd-models", auth=("ann", "secret"))
            assert models.status_code == 200
            assert [m["model_name"] for m in models.json()] == ["inkwash-demo"]
            queued = client.post("/prompt", json={"prompt": workflow}, auth=("ann", "secret"))
            assert queued.status_code == 200, queued.text
        job = running.ctx.queue.wait(queued.json()["prompt_id"], timeout=SLOW / 1000)
        assert job.status == "success", job.error
