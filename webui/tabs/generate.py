"""The generation tabs' handlers (txt2img, img2img, inpaint, depth2img): form values -> workflows on the
queue -> streamed progress, previews and results; and what the result gallery's buttons do.

Handlers are plain functions of plain values (a form is a dict of field name -> value), so they are
tested without a browser; common.py wires them to the components.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from PIL import Image, ImageChops

from ...nodes.formats.png_metadata import read_png_metadata
from ..context import ServerContext
from ..generation import BadRequest, Plan, build_depth2img, build_img2img, build_txt2img
from ..parameters import FIELDS, GenerationParams, slider
from ..templates import DEPTH2IMG
from ..xyz_plot import build_plot
from . import styles, xyz_plot
from .running import (QUIET_SECONDS, SubmitError, output_files, progress_html, refused, stop_jobs, submit_all,
                      watch)

MODES = ("txt2img", "img2img", "inpaint", "depth2img")
MASKED_CONTENT_CHOICES = ["fill", "original", "latent noise", "latent nothing"]  # A1111's order: 0..3
INPAINT_AREAS = ["Whole picture", "Only masked"]
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
PREVIEW_SIDE = 256
WORKFLOW_FILES = Path(tempfile.gettempdir()) / "inkwash-workflows"  # Gradio serves from the temp dir


class GenerationOutputs(NamedTuple):
    """One streamed update of a generation tab, in the order of its output components."""

    progress: str
    preview: Any  # the running job's latent preview (PIL) or None
    gallery: Any  # [(path, caption)], or gr.skip() when unchanged
    results: dict  # the session's results (see new_results)
    info: str  # the infotext of the selected image
    selected: int
    workflow_file: str | None
    button: Any  # the Generate button (its label counts this session's queued clicks), or gr.skip()
    depth: Any  # depth maps (depth2img) as [(path, caption)], or gr.skip()


# -- form -> parameters -> plan ------------------------------------------------------------------------

def as_pil(image: Any) -> Image.Image | None:
    """A PIL image from what Gradio hands over (PIL, numpy array or file path)."""
    if image is None or isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            opened.load()
            return opened
    raise BadRequest("image", f"expected an image, got {type(image).__name__}")


def editor_image_and_mask(editor: Any, uploaded_mask: Any = None) -> tuple[Image.Image | None, Image.Image | None]:
    """(image, mask) from gr.ImageEditor's value: the background is the image, the painted layers'
    alpha is the mask (white = repaint). An uploaded mask wins over the painted one."""
    if editor is None:
        return None, None
    if isinstance(editor, dict):
        background = as_pil(editor.get("background")) or as_pil(editor.get("composite"))
        layers = [as_pil(layer) for layer in editor.get("layers") or [] if layer is not None]
    else:
        background, layers = as_pil(editor), []
    if uploaded_mask is not None:
        return background, as_pil(uploaded_mask)
    if background is None or not layers:
        return background, None
    painted = Image.new("L", background.size, 0)
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != background.size:
            alpha = alpha.resize(background.size)
        painted = ImageChops.lighter(painted, alpha)
    return background, painted if painted.getbbox() else None


def params_from_form(mode: str, form: dict) -> GenerationParams:
    """The tab's form as GenerationParams, checked as the APIs' requests are (BadRequest naming the
    field). Fields left empty take GenerationParams' defaults."""
    if mode not in MODES:
        raise BadRequest("mode", f"unknown tab {mode!r}")
    values: dict[str, Any] = {name: form[name] for name in FIELDS if form.get(name) is not None}
    values.pop("init_image", None)
    values.pop("mask", None)
    if form.get("seed") == "":
        values.pop("seed")  # an emptied seed box: random
    if mode in ("img2img", "depth2img"):
        values["init_image"] = as_pil(form.get("init_image"))
    if mode == "inpaint":
        image, mask = editor_image_and_mask(form.get("inpaint_image"), form.get("mask_image"))
        if image is None:
            raise BadRequest("init_image", "upload the image to inpaint")
        if mask is None:
            raise BadRequest("mask", "paint over the area to repaint, or upload a mask")
        values.update(init_image=image, mask=mask,
                      inpaint_full_res=form.get("inpaint_area") in (1, INPAINT_AREAS[1]),
                      inpainting_mask_invert=form.get("mask_mode") in (1, MASK_MODES[1]))
    return GenerationParams(**values)


def _shown(number: float) -> str:
    return f"{number:g}" if number != int(number) else str(int(number))


def typed_value_note(name: str, typed: Any) -> str | None:
    """What became of a number typed into the slider of field `name`: Gradio's slider puts a value
    outside its range back at the nearest end when the box loses focus. The note says so, in the
    words of the check the APIs make where they would refuse it too; None when the value stands."""
    if typed is None or typed == "" or name not in FIELDS:
        return None
    try:
        number = float(typed)
    except (TypeError, ValueError):
        return f"{name}: expected a number, got {typed!r}"
    ui = slider(name)
    kept = min(max(number, ui["minimum"]), ui["maximum"])
    if kept == number:
        return None
    try:
        GenerationParams(**{name: typed})
    except BadRequest as exc:
        return f"{exc}; set to {_shown(kept)}"
    return (f"{name}: this slider goes from {_shown(ui['minimum'])} to {_shown(ui['maximum'])}; "
            f"{_shown(number)} was set to {_shown(kept)}")


def check_typed_value(name: str):
    """A slider's release handler (given the raw value, before the browser changes it) that warns
    with typed_value_note."""
    def check(typed: Any) -> None:
        note = typed_value_note(name, typed)
        if note:
            gr.Warning(note)
    return check


ROUNDED_SIZES = ("width", "height")  # rounded down to a multiple of 8, as A1111 does
ROUNDED_HIRES_SIZES = ("hr_resize_x", "hr_resize_y")


def rounding_notes(form: dict, params: GenerationParams) -> list[str]:
    """What the generation changed of the form's numbers: sizes rounded down to a multiple of 8."""
    notes = []
    for name in ROUNDED_SIZES + (ROUNDED_HIRES_SIZES if params.enable_hr else ()):
        given = form.get(name)
        used = getattr(params, name) // 8 * 8  # hires sizes round when the pass is built
        if isinstance(given, (int, float)) and not isinstance(given, bool) and given != used:
            notes.append(f"{name} {_shown(given)} was rounded down to {used}")
    return notes


def build_plan(ctx: ServerContext, mode: str, form: dict) -> Plan:
    form, style_warnings = styles.styled_form(ctx, form)  # A1111 applies the styles at Generate
    params = params_from_form(mode, form)
    plot = xyz_plot.plot_settings(form) if mode in xyz_plot.MODES else None
    if plot is not None:
        if mode != "txt2img" and params.init_image is None:
            raise BadRequest("init_image", f"{mode} needs an init image")
        plan = build_plot(mode, params, plot, ctx.folders, ctx.max_pixels, prefix=mode)
    elif mode == "txt2img":
        plan = build_txt2img(params, ctx.folders, ctx.max_pixels)
    elif mode == "depth2img":
        plan = build_depth2img(params, ctx.folders, ctx.max_pixels, form.get("controlnet"))
    elif params.init_image is None:
        raise BadRequest("init_image", f"{mode} needs an init image")
    else:
        plan = build_img2img(params, ctx.folders, ctx.max_pixels, prefix=mode)
    plan.warnings += style_warnings
    return plan


# -- running -------------------------------------------------------------------------------------------

def new_results(mode: str, plan: Plan, job_ids: list[str]) -> dict:
    """The session's record of one Generate click: its jobs, workflows and the images they made."""
    return {"mode": mode, "jobs": job_ids, "workflows": plan.workflows, "seed": plan.params.seed,
            "prompt": plan.params.prompt, "negative_prompt": plan.params.negative_prompt,
            "images": [], "depth": []}


def _collect(ctx: ServerContext, plan: Plan, results: dict, iteration: int, outputs: dict) -> None:
    try:
        paths = plan.finish(ctx.folders, iteration, outputs)
    except (OSError, ValueError, KeyError):  # an interrupted job may have left less than it reports
        paths = []
    seeds = plan.seeds[iteration] if iteration < len(plan.seeds) else []
    for index, path in enumerate(paths):
        if not path.is_file():
            continue
        results["images"].append({
            "path": str(path), "iteration": iteration,
            "seed": seeds[index] if index < len(seeds) else plan.params.seed,
            "infotext": read_png_metadata(path).get("parameters") or ""})
    if results["mode"] == "depth2img":
        preview = DEPTH2IMG.control_preview  # the same id in both depth templates
        results["depth"] += [str(p) for p in output_files(ctx, outputs, [preview])]


def gallery_items(results: dict | None) -> list[tuple[str, str]]:
    return [(image["path"], f"seed {image['seed']}") for image in (results or {}).get("images", [])]


class SessionRuns:
    """Each browser session's Generate clicks, in order. A click while an earlier one runs queues its jobs
    at once and waits its turn to show its progress; the Generate button says how many wait."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._runs: dict[str, list[object]] = {}

    def join(self, session: str) -> object:
        token = object()
        with self._changed:
            self._runs.setdefault(session, []).append(token)
        return token

    def waiting(self, session: str) -> int:
        """How many of the session's clicks wait behind the one that shows its progress."""
        with self._changed:
            return max(len(self._runs.get(session, [])) - 1, 0)

    def wait_turn(self, session: str, token: object, timeout: float) -> bool:
        """True once `token` is the session's first run; False after `timeout` s without that."""
        with self._changed:
            return self._changed.wait_for(lambda: self._runs.get(session, [token])[0] is token, timeout)

    def leave(self, session: str, token: object) -> None:
        with self._changed:
            runs = self._runs.get(session, [])
            if token in runs:
                runs.remove(token)
            if not runs:
                self._runs.pop(session, None)
            self._changed.notify_all()


RUNS = SessionRuns()


def generate_button(waiting: int) -> gr.Button:
    return gr.Button(value="Generate" if waiting == 0 else f"Generate ({waiting} queued)")


def generate(ctx: ServerContext, mode: str, form: dict, session: str | None = None) -> Iterator[GenerationOutputs]:
    """Queue the tab's workflows and stream progress until every job is done. With a `session`, a run
    that starts while an earlier one of the same session is still going waits its turn (its jobs are
    queued already) and only updates the Generate button's count meanwhile."""
    try:
        plan = build_plan(ctx, mode, form)
        job_ids = submit_all(ctx, plan.workflows)
    except (BadRequest, SubmitError) as exc:
        raise refused(str(exc)) from None
    for note in rounding_notes(form, plan.params) + plan.warnings:
        gr.Warning(note)
    token = RUNS.join(session) if session is not None else None
    try:
        while token is not None and not RUNS.wait_turn(session, token, timeout=QUIET_SECONDS):
            yield GenerationOutputs(*[gr.skip()] * 7, generate_button(RUNS.waiting(session)), gr.skip())
        yield from _stream(ctx, mode, plan, job_ids, session)
    finally:
        if token is not None:
            RUNS.leave(session, token)


def _stream(ctx: ServerContext, mode: str, plan: Plan, job_ids: list[str],
            session: str | None) -> Iterator[GenerationOutputs]:
    results = new_results(mode, plan, job_ids)
    shown = -1
    for state in watch(ctx, job_ids):
        for job_id in state.newly_done:
            _collect(ctx, plan, results, job_ids.index(job_id), state.done[job_id].outputs)
        changed = len(results["images"]) != shown or state.finished
        shown = len(results["images"])
        if not state.finished:
            preview = enlarged(state.progress.preview)
        else:  # an interrupted run shows the last state it reached, as A1111 does
            preview = enlarged(state.last_preview) if state.stopped and not results["images"] else None
        yield GenerationOutputs(
            progress_html(state, "Batch", plan.workflows), preview,
            gallery_items(results) if changed else gr.skip(), results, image_info(results, 0), 0,
            workflow_file(results, 0) if changed else gr.skip(),
            generate_button(RUNS.waiting(session)) if session is not None else gr.skip(),
            [(p, "depth map") for p in results["depth"]] if changed else gr.skip())


def enlarged(preview: Image.Image | None, side: int = PREVIEW_SIDE) -> Image.Image | None:
    """The latent preview (1/8 of the image size) scaled up to be seen."""
    if preview is None or max(preview.size) >= side:
        return preview
    scale = side / max(preview.size)
    return preview.resize((round(preview.width * scale), round(preview.height * scale)), Image.Resampling.BILINEAR)


def interrupt(ctx: ServerContext, results: dict | None) -> None:
    """Stop this session's jobs: pending ones are cancelled, the running one interrupted."""
    stop_jobs(ctx, list((results or {}).get("jobs", [])))


# -- the result gallery ----------------------------------------------------------------------------------

def selected_image(results: dict | None, selected: int | None) -> dict | None:
    images = (results or {}).get("images") or []
    if not images:
        return None
    index = selected if isinstance(selected, int) and 0 <= selected < len(images) else 0
    return images[index]


def image_info(results: dict | None, selected: int | None) -> str:
    image = selected_image(results, selected)
    return image["infotext"] if image else ""


def select_image(results: dict | None, evt: gr.SelectData) -> tuple[int, str, str | None]:
    """Gallery click: (selected index, its infotext, its workflow file)."""
    index = evt.index if isinstance(evt.index, int) else 0
    return index, image_info(results, index), workflow_file(results, index)


def reuse_seed(results: dict | None, selected: int | None) -> int:
    """The seed of the selected image (of the last run when none is selected), -1 before any run."""
    image = selected_image(results, selected)
    if image is not None:
        return int(image["seed"])
    return int((results or {}).get("seed", -1))


def workflow_file(results: dict | None, selected: int | None) -> str | None:
    """A .json file of the exact API-format workflow that produced the selected image."""
    image = selected_image(results, selected)
    if image is None:
        return None
    workflow = results["workflows"][image["iteration"]]
    text = json.dumps(workflow, indent=2)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    path = WORKFLOW_FILES / f"{results.get('mode', 'workflow')}-seed{image['seed']}-{digest}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(text)
        temp.replace(path)
    return str(path)


def send_image(results: dict | None, selected: int | None) -> tuple[str, str, str]:
    """(image path, prompt, negative prompt) of the selected image, for another tab."""
    image = selected_image(results, selected)
    if image is None:
        raise refused("Generate an image first")
    return image["path"], results.get("prompt", ""), results.get("negative_prompt", "")
