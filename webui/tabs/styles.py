"""The generation tabs' prompt styles, as A1111's: a Styles multi-select under the Generate button whose styles
are applied at Generate, "Apply styles to prompt" (writes the styled prompts into the boxes and clears
the selection) and "Save style" (the current prompts under a name) -- over the server's styles.csv
(webui/prompt_styles.py)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import prompt_styles
from ..context import ServerContext
from ..generation import BadRequest
from ..prompt_styles import PromptStyle, StylesError


def library(ctx: ServerContext) -> prompt_styles.StyleLibrary:
    return prompt_styles.library(ctx.data_dir, ctx.folders.install_dirs)


def style_names(ctx: ServerContext) -> list[str]:
    """The styles to offer; none when the file can't be read (Generate and the buttons say why)."""
    try:
        return library(ctx).names()
    except StylesError:
        return []


def refreshed(ctx: ServerContext, selected: list[str] | None) -> gr.Dropdown:
    """The dropdown over the file as it is now, keeping the selected styles it still has."""
    choices = style_names(ctx)
    return gr.Dropdown(choices=choices, value=[n for n in selected or [] if n in choices], multiselect=True)


def styled_form(ctx: ServerContext, form: dict) -> tuple[dict, list[str]]:
    """The tab's form with its selected styles applied to the prompts, and warnings for styles that are
    gone from the file (left out, as A1111 does); BadRequest naming the file when it can't be read."""
    names = form.get("styles") or []
    if not names:
        return form, []
    try:
        prompt, negative, unknown = library(ctx).apply(form.get("prompt") or "", form.get("negative_prompt") or "",
                                                       names)
    except StylesError as exc:
        raise BadRequest("styles", str(exc)) from None
    return ({**form, "prompt": prompt, "negative_prompt": negative},
            [f"styles: no style named {name!r}; ignored" for name in unknown])


def apply_to_prompt(ctx: ServerContext, prompt: str, negative: str, names: list[str] | None):
    """(prompt, negative prompt, styles selection, note): the selected styles written into the prompt
    boxes and the selection cleared, so they aren't applied twice."""
    try:
        prompt, negative, unknown = library(ctx).apply(prompt or "", negative or "", names or [])
    except StylesError as exc:
        return gr.skip(), gr.skip(), gr.skip(), str(exc)
    note = f"No style named {', '.join(map(repr, unknown))}; left out." if unknown else ""
    return prompt, negative, refreshed(ctx, []), note


def save_style(ctx: ServerContext, name: str, prompt: str, negative: str, replace: bool,
               selected: list[str] | None):
    """(styles dropdown, note): the current prompts saved as style `name`; one of that name is replaced
    only when `replace` is ticked."""
    name = (name or "").strip()
    try:
        library(ctx).save(PromptStyle(name, prompt or "", negative or ""), replace=bool(replace))
    except StylesError as exc:
        note = f"{exc}: tick \"Replace\" to overwrite it" if "already exists" in str(exc) else str(exc)
        return gr.skip(), note
    return refreshed(ctx, selected), f"Saved style {name!r}."


@dataclass
class StyleControls:
    styles: gr.Dropdown
    apply: gr.Button
    name: gr.Textbox
    replace: gr.Checkbox
    save: gr.Button
    note: gr.Markdown


def style_controls(ctx: ServerContext) -> StyleControls:
    """Lay out the Styles controls (in the column of the Generate button)."""
    styles = gr.Dropdown(style_names(ctx), value=[], multiselect=True, label="Styles")
    apply = gr.Button("Apply styles to prompt", size="sm")
    with gr.Accordion("Save style", open=False):
        name = gr.Textbox(label="Style name")
        replace = gr.Checkbox(label="Replace", value=False)
        save = gr.Button("Save style", size="sm")
    note = gr.Markdown()
    return StyleControls(styles, apply, name, replace, save, note)


def wire(ctx: ServerContext, controls: StyleControls, prompt: gr.Textbox, negative: gr.Textbox,
         refresh: gr.Button) -> None:
    """The buttons' events; the tab's Refresh button also rereads the styles (saved by the API or
    another tab, or the file edited by hand)."""
    controls.apply.click(lambda *values: apply_to_prompt(ctx, *values),
                         inputs=[prompt, negative, controls.styles],
                         outputs=[prompt, negative, controls.styles, controls.note], queue=False)
    controls.save.click(lambda *values: save_style(ctx, *values),
                        inputs=[controls.name, prompt, negative, controls.replace, controls.styles],
                        outputs=[controls.styles, controls.note], queue=False)
    refresh.click(lambda selected: refreshed(ctx, selected), inputs=[controls.styles], outputs=[controls.styles],
                  queue=False)
