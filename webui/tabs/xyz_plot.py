"""The X/Y/Z plot in the txt2img and img2img tabs: A1111's "Script" dropdown and the plot's settings
(webui/xyz_plot.py), as form fields named "script" and "xyz_*", and "Export grid workflow"."""
from __future__ import annotations

import hashlib
import json

import gradio as gr
from gradio.components import Component

from ..bad_request import BadRequest
from ..context import ServerContext
from ..xyz_axes import axes_for, choices, csv_line, find_axis
from ..xyz_plot import MAX_MARGIN, TITLE, XyzSettings

MODES = ("txt2img", "img2img")  # the tabs with the plot
NO_SCRIPT = "None"
PREFIX = "xyz_"


def inputs(ctx: ServerContext, mode: str) -> tuple[dict[str, Component], gr.Button, gr.File]:
    """The Script dropdown and, shown when the plot is picked, its settings (A1111's layout; "Fill" puts
    every choice of a sampler, checkpoint... axis in its values) and the "Export grid workflow" button
    with the file it gives: (the inputs, the button, the file)."""
    labels = [axis.label for axis in axes_for(mode) if axis.available]
    fields: dict[str, Component] = {"script": gr.Dropdown([NO_SCRIPT, TITLE], value=NO_SCRIPT, label="Script")}
    with gr.Group(visible=False) as group:
        for which, start in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
            with gr.Row(equal_height=True):
                fields[f"{PREFIX}{which}_type"] = gr.Dropdown(labels, value=start, label=f"{which.upper()} type",
                                                              scale=1)
                fields[f"{PREFIX}{which}_values"] = gr.Textbox(
                    label=f"{which.upper()} values", scale=3,
                    placeholder="1-5, 1-5 (+2), 1-10 [5], a, \"b, c\"")
                fill = gr.Button("Fill", size="sm", scale=0, min_width=60)
            fill.click(lambda label, text: fill_values(ctx, mode, label, text),
                       inputs=[fields[f"{PREFIX}{which}_type"], fields[f"{PREFIX}{which}_values"]],
                       outputs=[fields[f"{PREFIX}{which}_values"]], api_name=False)
        with gr.Row():
            fields[f"{PREFIX}draw_legend"] = gr.Checkbox(True, label="Draw legend")
            fields[f"{PREFIX}include_lone_images"] = gr.Checkbox(True, label="Include Sub Images")
            fields[f"{PREFIX}include_sub_grids"] = gr.Checkbox(False, label="Include Sub Grids")
            fields[f"{PREFIX}no_fixed_seeds"] = gr.Checkbox(False, label="Keep -1 for seeds")
        with gr.Row():
            for which in "xyz":
                fields[f"{PREFIX}vary_seeds_{which}"] = gr.Checkbox(False, label=f"Vary seeds for {which.upper()}")
        fields[f"{PREFIX}margin_size"] = gr.Slider(0, MAX_MARGIN, value=0, step=2, label="Grid margins (px)")
        with gr.Row(equal_height=True):
            export_grid = gr.Button("Export grid workflow", size="sm", scale=0, min_width=180)
            grid_workflow = gr.File(label="Grid workflow", interactive=False, height=60)
    fields["script"].change(lambda script: gr.Group(visible=script == TITLE), inputs=[fields["script"]],
                            outputs=[group], queue=False, api_name=False)
    return fields, export_grid, grid_workflow


def fill_values(ctx: ServerContext, mode: str, label: str, text: str) -> str:
    """Every value the axis can take, as its values text; the text as it was for an axis without choices."""
    listed = choices(find_axis(mode, label, "X"), ctx.folders)
    if not listed:
        gr.Info(f"{label} has no list of values to fill in")
        return text
    return csv_line(listed)


def plot_settings(form: dict) -> XyzSettings | None:
    """The plot's settings when the form's Script is the X/Y/Z plot, else None. The tabs type every
    axis's values (A1111's "Use text inputs instead of dropdowns")."""
    if form.get("script") != TITLE:
        return None
    values = {name[len(PREFIX):]: value for name, value in form.items() if name.startswith(PREFIX)}
    return XyzSettings.from_values({**values, "csv_mode": True})


def export_workflow(ctx: ServerContext, mode: str, form: dict) -> str:
    """The grid's workflow (one branch per cell) as a .json file for the browser to download."""
    from .generate import WORKFLOW_FILES, build_plan
    from .running import refused

    if plot_settings(form) is None:
        raise refused("Pick the X/Y/Z plot in Script first")
    try:
        plan = build_plan(ctx, mode, form)
    except BadRequest as exc:
        raise refused(str(exc)) from None
    text = json.dumps(plan.workflows[0], indent=2)
    path = WORKFLOW_FILES / f"{mode}-xyz-grid-{hashlib.sha256(text.encode()).hexdigest()[:10]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)
