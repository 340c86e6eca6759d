"""Checking what is dropped on an image field at upload time: a file that is not a picture (a text file
named .png) is refused there, in plain words, and the field is cleared, instead of failing later inside
Gradio's preprocessing with a server path in the message."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from .page_script import NOT_AN_IMAGE


def uploaded_file(payload: Any) -> tuple[str | None, str]:
    """(server path, the name the user gave it) of an image field's raw value (an image, or the image
    editor's background)."""
    if isinstance(payload, dict) and isinstance(payload.get("background"), (dict, type(None))) \
            and "layers" in payload:
        payload = payload.get("background")
    if not isinstance(payload, dict):
        return None, ""
    path = payload.get("path")
    name = payload.get("orig_name") or (Path(path).name if path else "the file")
    return path, name


def not_an_image(path: str | None, name: str) -> str | None:
    """Why the file at `path` is not a picture Pillow can read, or None when it is one."""
    if not path:
        return None
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return f"{name} {NOT_AN_IMAGE}"
    return None


def check_upload(payload: Any) -> Any:
    """An image field's upload handler: keep a picture (gr.skip()), clear anything else with a warning."""
    problem = not_an_image(*uploaded_file(payload))
    if problem is None:
        return gr.skip()
    gr.Warning(problem)
    return None


def refuse_non_images(*fields: gr.Image | gr.ImageEditor) -> None:
    """Check every upload to these fields (the raw file, before Gradio tries to open it)."""
    for field in fields:
        field.upload(check_upload, inputs=[field], outputs=[field], preprocess=False,
                     show_progress="hidden")
