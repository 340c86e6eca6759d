"""Regenerate the README's pictures, docs/screenshots/*.png: the app on the bundled demo model
(models/), driven in headless Chromium as a user would drive it. Each picture is taken only after the
image it shows has been checked to be what the prompt asked for (demo/judge.py reads it back).

    ./inkwash.sh screenshots            # or: python tests/screenshots.py [--out DIR]

The test suite never writes these files; run this when the UI changes.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from browser_app import CHROMIUM, CHROMIUM_ARGS, SLOW, VIEWPORT, serve_app

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"
SEED = 7  # a seed whose demo pictures are clean (under the tabs' default GPU random numbers)
STEPS = 20  # the shipped workflows' steps


def judged(path: Path, expected: dict[str, str]) -> None:
    """Stop unless the demo judge reads `expected` (e.g. {"colour": "red", "shape": "circle"}) from the image."""
    from inkwash.demo.judge import describe

    with Image.open(path) as image:
        seen = describe(np.asarray(image.convert("RGB")))
    wrong = {key: (value, seen.get(key)) for key, value in expected.items() if seen.get(key) != value}
    if wrong:
        raise SystemExit(f"{path.name} does not show what was asked (asked, seen): {wrong}")


def visible_tab(page):
    return page.locator("[role=tabpanel]").filter(visible=True)


def set_number(panel, label: str, value: int) -> None:
    field = panel.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Tab")


def generate(page, panel, seed: int) -> None:
    set_number(panel, "Seed (-1: random)", seed)
    panel.get_by_role("button", name="Generate", exact=True).click()
    result = panel.locator(f"img[alt='seed {seed}']").first
    result.wait_for(timeout=SLOW)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=result.element_handle())


def last_image(running) -> Path:
    job = running.ctx.queue.history()[-1]
    if job.status != "success":
        raise SystemExit(f"the job failed: {job.error}")
    saved = next(entry for ui in job.outputs.values() for entry in ui.get("images", []))
    return running.ctx.folders.output_dir / saved["subfolder"] / saved["filename"]


def shoot(page, out: Path, name: str, full_page: bool = False) -> None:
    page.mouse.move(0, 0)  # no hover highlight
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(out / f"{name}.png"), full_page=full_page, animations="disabled", caret="hide")
    print(f"wrote {out / name}.png", flush=True)


def txt2img(page, running, out: Path) -> None:
    """The txt2img tab as it opens on the demo model (its own prompt), after one Generate."""
    page.goto(running.url + "/")
    panel = visible_tab(page)
    generate(page, panel, SEED)
    judged(last_image(running), {"background": "blue", "colour": "red", "shape": "circle"})
    shoot(page, out, "txt2img", full_page=True)


def inpaint(page, running, out: Path) -> None:
    """inpaint: the txt2img result with its circle painted over, repainted as a yellow star."""
    source = last_image(running)
    page.get_by_role("tab", name="inpaint", exact=True).click()
    panel = visible_tab(page)
    zoom = panel.get_by_text(re.compile(r"^\d+%$"))
    blank_zoom = zoom.inner_text()
    panel.locator("input[type=file]").first.set_input_files(str(source))
    page.wait_for_function("([el, before]) => el.textContent.trim() !== before",
                           arg=[zoom.element_handle(), blank_zoom], timeout=SLOW)
    panel.get_by_role("button", name="Brush", exact=True).click()
    box = panel.locator("canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    side = min(box["width"], box["height"])
    page.mouse.move(cx - side * 0.12, cy - side * 0.12)
    page.mouse.down()
    for row in range(5):  # a zig-zag over the circle in the middle
        y = cy - side * 0.12 + row * side * 0.06
        page.mouse.move(cx + (side * 0.12 if row % 2 == 0 else -side * 0.12), y, steps=6)
    page.mouse.up()
    prompt = panel.get_by_label("Prompt", exact=True)
    prompt.fill("a large yellow star on a blue background")
    generate(page, panel, SEED)
    judged(last_image(running), {"background": "blue", "colour": "yellow"})
    shoot(page, out, "inpaint", full_page=True)


def history(page, out: Path) -> None:
    """Queue & history with the jobs so far, the first one picked (its images below)."""
    page.get_by_role("tab", name="Queue & history", exact=True).click()
    panel = visible_tab(page)
    panel.locator("img[alt^='#1 ']").first.click()
    panel.locator("img[alt^='inkwash_']").first.wait_for(timeout=SLOW)
    page.wait_for_timeout(500)
    shoot(page, out, "queue")


def graph_editor(page, running, out: Path) -> None:
    """The graph editor with the txt2img template, after running it (its result in the Save Image node)."""
    page.goto(running.url + "/graph/")
    page.wait_for_function("() => window.app?.graph?._nodes?.some(n => n.type === 'KSampler')", timeout=SLOW)
    page.evaluate("""(seed) => {
        window.__done = 0;
        app.api.addEventListener('execution_success', () => { window.__done += 1 });
        const sampler = app.graph._nodes.find(n => n.type === 'KSampler');
        sampler.widgets.find(w => w.name === 'seed').value = seed;
        sampler.widgets.find(w => w.name === 'control_after_generate').value = 'fixed';
    }""", SEED)
    page.evaluate("async () => { await app.queuePrompt(0, 1) }")
    page.wait_for_function("() => window.__done >= 1", timeout=SLOW)
    page.wait_for_function("() => Array.from(document.images).some(i => i.src.includes('/view?') && i.complete"
                           " && i.naturalWidth > 0)")
    from inkwash.demo.world import COLOURS, SHAPES

    words = running.ctx.queue.history()[-1].workflow["6"]["inputs"]["text"].split()  # the positive prompt
    judged(last_image(running), {"colour": next(w for w in words if w in COLOURS),
                                 "shape": next(w for w in words if w in SHAPES)})
    # The whole graph at a zoom that draws the nodes' text, without the frame counter.
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
    shoot(page, out, "graph-editor")


def xyz_plot(page, running, out: Path) -> None:
    """The X/Y/Z plot's grid from the txt2img tab: three prompts by prompt S/R across, two seeds down."""
    import shutil

    page.goto(running.url + "/")
    panel = visible_tab(page)
    panel.get_by_label("Prompt", exact=True).fill("a large red circle on a blue background")
    for label, option in (("Script", "X/Y/Z plot"), ("X type", "Prompt S/R"), ("Y type", "Seed")):
        panel.get_by_label(label, exact=True).click()
        page.get_by_role("option", name=option, exact=True).filter(visible=True).first.click()
        page.wait_for_timeout(300)  # the list closes
    panel.get_by_label("X values", exact=True).fill("red circle, yellow star, white square")
    panel.get_by_label("Y values", exact=True).fill(f"{SEED}-{SEED + 1}")
    generate(page, panel, SEED)
    job = running.ctx.queue.history()[-1]
    if job.status != "success":
        raise SystemExit(f"the job failed: {job.error}")
    savers = sorted((int(n) for n, node in job.workflow.items() if node["class_type"] == "SaveImage"))
    for node_id, (colour, shape) in zip(savers, [("red", "circle"), ("yellow", "star"), ("white", "square")] * 2):
        saved = job.outputs[str(node_id)]["images"][0]
        judged(running.ctx.folders.output_dir / saved["subfolder"] / saved["filename"],
               {"colour": colour, "shape": shape})
    grid = max(running.ctx.folders.output_dir.glob("xyz_grid_*.png"), key=lambda p: p.stat().st_mtime)
    shutil.copyfile(grid, out / "xyz-plot.png")
    print(f"wrote {out / 'xyz-plot.png'}", flush=True)


def styles(page, running, out: Path) -> None:
    """txt2img with a prompt style (A1111's styles.csv) that puts the prompt on a blue background."""
    from inkwash.webui import prompt_styles
    from inkwash.webui.prompt_styles import PromptStyle

    prompt_styles.write_styles(running.ctx.data_dir / prompt_styles.STYLES_FILE,
                               [PromptStyle("blue backdrop", "{prompt} on a blue background", "blurry")])
    page.goto(running.url + "/")
    panel = visible_tab(page)
    panel.get_by_label("Prompt", exact=True).fill("a large yellow star")
    panel.get_by_role("button", name="Refresh", exact=True).click()  # rereads the styles file
    chosen = panel.get_by_label("Styles", exact=True)
    chosen.click()
    page.get_by_role("option", name="blue backdrop", exact=True).click()
    chosen.press("Escape")
    generate(page, panel, SEED)
    judged(last_image(running), {"background": "blue", "colour": "yellow", "shape": "star"})
    shoot(page, out, "styles", full_page=True)


def models_tab(page, running, out: Path) -> None:
    """The Models tab once every bundled model is hashed: family, size and A1111's short hash per file."""
    from inkwash.nodes.formats import file_hashes

    folders = running.ctx.folders
    for kind in ("checkpoints", "vae", "loras", "controlnet"):
        for name in folders.list(kind):
            file_hashes.current().wait_for(folders.find(kind, name))
    page.goto(running.url + "/")
    page.get_by_role("tab", name="Models", exact=True).click()
    panel = visible_tab(page)
    panel.get_by_role("button", name="Refresh", exact=True).first.click()
    demo = folders.find("checkpoints", folders.list("checkpoints")[0])
    panel.get_by_text(file_hashes.current().known(demo)[:10]).filter(visible=True).first.wait_for(timeout=SLOW)
    page.wait_for_timeout(500)
    shoot(page, out, "models")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SCREENSHOTS, help="where the pictures go (docs/screenshots)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inkwash-screenshots-") as work, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        with serve_app(Path(work), models_dir=REPO / "models") as running:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(SLOW)
            page = context.new_page()
            txt2img(page, running, args.out)
            inpaint(page, running, args.out)
            history(page, args.out)
            graph_editor(context.new_page(), running, args.out)
            xyz_plot(context.new_page(), running, args.out)
            styles(context.new_page(), running, args.out)
            models_tab(context.new_page(), running, args.out)
            context.close()
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
