"""txt2img: the shared controls, hires fix and the refiner over workflows/txt2img.json."""
from __future__ import annotations

from ..context import ServerContext
from .common import GenerationTab, generation_tab


def build(ctx: ServerContext) -> GenerationTab:
    return generation_tab(ctx, "txt2img", hires=True, refiner=True)
