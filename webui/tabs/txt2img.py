"""txt2img: the shared controls over workflows/txt2img.json."""
from __future__ import annotations

from ..context import ServerContext
from .common import GenerationTab, generation_tab


def build(ctx: ServerContext) -> GenerationTab:
    return generation_tab(ctx, "txt2img")
