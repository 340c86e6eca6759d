"""PNG Info: what a picture carries (A1111's parameters, ComfyUI's workflow), and sending its settings
to txt2img or img2img: the checkpoint found by its `Model hash` (a renamed file too), else by `Model`, and
the prompt's LoRA tags renamed to the files their `Lora hashes` match (webui/model_match.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ...nodes.folders import Folders
from ...nodes.formats.png_metadata import PngTextTooLarge, parse_infotext, read_png_metadata
from ...nodes.formats.sampler_names import a1111_names
from .. import model_match
from ..generation import BadRequest, sampler_and_scheduler
from ..parameters import RANDN_SOURCES
from .uploads import not_an_image, refuse_non_images, uploaded_file

# The form fields an infotext fills, as the generation tabs name them.
SENT_FIELDS = ("checkpoint", "prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "seed",
               "width", "height", "clip_skip", "randn_source", "eta_noise_seed_delta", "subseed", "subseed_strength",
               "seed_resize_from_w", "seed_resize_from_h")


NO_PARAMETERS = "This picture carries no generation parameters (no A1111 infotext, no workflow)."


def png_info(upload: str | dict | None) -> tuple[str, str, str]:
    """(A1111 infotext, workflow JSON: the API-format prompt, else the editor's workflow, a note for the
    user) of a picture: its path, or the image field's raw value."""
    path, name = uploaded_file(upload) if isinstance(upload, dict) else (upload, Path(upload or "").name)
    if not path:
        return "", "", ""
    problem = not_an_image(path, name)
    if problem:
        return "", "", problem
    try:
        metadata = read_png_metadata(Path(path))
    except PngTextTooLarge as exc:
        return "", "", f"Not read: {exc}"
    workflow = metadata.get("prompt") or metadata.get("workflow")
    parameters = metadata.get("parameters") or ""
    note = "" if parameters or workflow else NO_PARAMETERS
    return parameters, json.dumps(workflow, indent=2) if workflow else "", note


def infotext_fields(infotext: str, folders: Folders | None = None) -> dict[str, Any]:
    """The generation form's values an infotext gives, with the tabs' (A1111's) sampler and schedule type
    names; fields the text doesn't have are left out. With `folders`, the installed checkpoint it names
    and its LoRA tags relinked to renamed files (model_match; hashes not known yet aren't waited for)."""
    if not infotext or not infotext.strip():
        return {}
    parsed = parse_infotext(infotext, defaults=False)
    fields: dict[str, Any] = {"prompt": parsed.get("Prompt", ""), "negative_prompt": parsed.get("Negative prompt", "")}
    if folders is not None:
        fields["prompt"] = model_match.relink_lora_tags(fields["prompt"], parsed.get("Lora hashes"), folders)
        checkpoint = model_match.infotext_checkpoint(folders, parsed)
        if checkpoint.name:
            fields["checkpoint"] = checkpoint.name
    if parsed.get("Sampler"):
        try:
            # through ComfyUI's names, so old combined names ("DPM++ 2M Karras") come out split
            fields["sampler_name"], fields["scheduler"] = a1111_names(*sampler_and_scheduler(
                parsed["Sampler"], parsed.get("Schedule type") or None))
        except BadRequest:
            pass  # a sampler we don't have: keep the form's
    for key, name, kind in (("Steps", "steps", int), ("CFG scale", "cfg_scale", float), ("Seed", "seed", int),
                            ("Size-1", "width", int), ("Size-2", "height", int)):
        try:
            fields[name] = kind(float(parsed[key])) if kind is int else kind(parsed[key])
        except (KeyError, TypeError, ValueError):
            pass
    try:
        fields["clip_skip"] = int(parsed.get("Clip skip", 1))  # A1111 reads a missing one as 1
    except ValueError:
        pass
    # the image's random numbers: A1111 reads a missing RNG as its default GPU source, a missing ENSD as none
    rng = str(parsed.get("RNG", "GPU")).strip()
    fields["randn_source"] = rng if rng in RANDN_SOURCES else "GPU"
    try:
        fields["eta_noise_seed_delta"] = max(0, int(parsed.get("ENSD", 0)))
    except (TypeError, ValueError):
        pass
    # the variation seed and seed resize: none unless the infotext has them
    for key, name, kind, missing in (("Variation seed", "subseed", int, None),
                                     ("Variation seed strength", "subseed_strength", float, 0.0),
                                     ("Seed resize from-1", "seed_resize_from_w", int, 0),
                                     ("Seed resize from-2", "seed_resize_from_h", int, 0)):
        try:
            text = str(parsed[key]).strip()
            fields[name] = max(int(text) if kind is int and text.isdigit() else kind(float(text)), 0)
        except (KeyError, TypeError, ValueError):
            if missing is not None:
                fields[name] = missing
    return fields


def checkpoint_note(infotext: str, folders: Folders) -> str:
    """What the page says when the checkpoint an infotext names isn't found by its hash; "" when it is."""
    parsed = parse_infotext(infotext or "", defaults=False)
    if not parsed.get("Model hash") and not parsed.get("Model"):
        return ""
    found = model_match.infotext_checkpoint(folders, parsed)
    if found.by == "hash":
        return ""
    wanted = f"{parsed.get('Model') or 'checkpoint'} [{parsed.get('Model hash') or 'no hash'}]"
    pending = (f"; {found.unhashed} checkpoint(s) are still being hashed, send again once the Models tab shows "
               "their hashes") if found.unhashed else ""
    if found.by == "name":
        return f"Checkpoint {found.name} chosen by name: no installed checkpoint has the hash of {wanted}{pending}."
    return f"The checkpoint {wanted} is not installed; the form keeps its own{pending}."


def sent_values(infotext: str, folders: Folders | None = None) -> list:
    """SENT_FIELDS' values in order; gr.skip() for those the infotext lacks."""
    fields = infotext_fields(infotext, folders)
    return [fields[name] if name in fields else gr.skip() for name in SENT_FIELDS]


@dataclass
class PngInfoTab:
    image: gr.Image
    parameters: gr.Textbox
    workflow_json: gr.Code
    send_txt2img: gr.Button
    send_img2img: gr.Button
    open_workflow: gr.Button
    note: gr.Markdown


def build() -> PngInfoTab:
    with gr.Row():
        with gr.Column():
            # filepath and no mode conversion: the file as uploaded, text chunks intact
            image = gr.Image(label="Drop a PNG", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                             height=360)
            note = gr.Markdown()
        with gr.Column():
            parameters = gr.Textbox(label="Parameters", lines=6, interactive=False)
            with gr.Row():
                send_txt2img = gr.Button("Send to txt2img")
                send_img2img = gr.Button("Send to img2img")
                open_workflow = gr.Button("Open in Workflows")
            with gr.Accordion("Workflow", open=False):
                workflow_json = gr.Code(language="json", interactive=False)
    # The raw upload (no preprocessing): a file that is not a picture gets a plain note, not Gradio's error,
    # and is cleared.
    refuse_non_images(image)
    image.change(png_info, inputs=[image], outputs=[parameters, workflow_json, note], preprocess=False)
    return PngInfoTab(image, parameters, workflow_json, send_txt2img, send_img2img, open_workflow, note)
