"""The generation tabs' starting values, which depend on the checkpoint: the bundled demo model draws
coloured shapes at 128x128 and works best as the shipped workflows run it (CFG 5, Euler, its own kind of
prompt, inpaint at full denoise over the original picture); any other checkpoint gets AUTOMATIC1111's
defaults. Choosing another checkpoint moves the fields the user has not changed to its defaults."""
from __future__ import annotations

from typing import Any

import gradio as gr

from ...demo import world

DEMO_PREFIX = "inkwash-demo"
DEMO_PROMPT = "a large red circle on a blue background"
DEMO_EXAMPLES = [
    DEMO_PROMPT,
    "a small yellow star in the top left corner on a purple background",
    "a large green triangle on a white background",
    "a small white square at the bottom on a black background",
    "an orange circle on the right and a blue star on the left on a green background",
    "a large purple square in the center on a yellow background",
]

# field -> value, for every tab; then what differs per tab
A1111 = {"prompt": "", "cfg_scale": 7.0, "width": 512, "height": 512, "sampler_name": "DPM++ 2M",
         "scheduler": "Automatic"}
DEMO = {"prompt": DEMO_PROMPT, "cfg_scale": 5.0, "width": 128, "height": 128, "sampler_name": "Euler",
        "scheduler": "Automatic"}
A1111_BY_MODE = {"img2img": {"denoising_strength": 0.75}, "inpaint": {"denoising_strength": 0.75},
                 "depth2img": {"denoising_strength": 0.8}}
# As workflows/img2img.json, inpaint.json (VAEEncode + SetLatentNoiseMask: "original" at denoise 1)
# and depth2img.json run the demo model.
DEMO_BY_MODE = {"img2img": {"denoising_strength": 0.6},
                "inpaint": {"denoising_strength": 1.0, "inpainting_fill": "original"},
                "depth2img": {"denoising_strength": 0.8}}


def is_demo(checkpoint: str | None) -> bool:
    return bool(checkpoint) and str(checkpoint).startswith(DEMO_PREFIX)


def defaults(checkpoint: str | None, mode: str) -> dict[str, Any]:
    """The starting value of each field that depends on the checkpoint, for one tab."""
    demo = is_demo(checkpoint)
    return {**(DEMO if demo else A1111), **(DEMO_BY_MODE if demo else A1111_BY_MODE).get(mode, {})}


def switched(previous: str | None, checkpoint: str | None, mode: str, current: dict[str, Any]) -> list:
    """Updates for the fields in `current` (name -> value) when the checkpoint changes from `previous`:
    a field still at the previous checkpoint's default takes the new one; a field the user changed
    stays (gr.skip())."""
    before, after = defaults(previous, mode), defaults(checkpoint, mode)
    return [after[name] if name in after and _same(value, before.get(name)) else gr.skip()
            for name, value in current.items()]


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return float(value) == float(default)
        except (TypeError, ValueError):
            return False
    return value == default


def vocabulary_markdown() -> str:
    """What the demo model knows, from the world it was trained on."""
    return "\n".join([
        "The demo model draws one or two coloured shapes on a plain or two-tone background, at 128x128. "
        "Say the colour and the shape; size, position and background are optional.",
        "",
        f"- **colours** (shapes and backgrounds): {', '.join(world.COLOURS)}",
        f"- **shapes**: {', '.join(world.SHAPES)}",
        f"- **sizes**: {', '.join(world.SIZES)}",
        f"- **positions**: {', '.join(world.POSITIONS)} (\"in the top left corner\", \"on the left\", ...)",
        "- **backgrounds**: \"on a blue background\", \"blue and green background\" (top, bottom)",
    ])
