"""The X/Y/Z plot's axes: A1111's axis list (scripts/xyz_grid.py, in its order, so that an API client's
axis index means the same here), its value syntax, and how a value changes a cell's GenerationParams.

Values are a comma list read as CSV (quote a value that holds a comma). Integer and number axes also
take A1111's ranges: `1-5` (step 1), `1-5 (+2)` / `10-1 (-3)` (a step, signed), `1-10 [5]` (a count,
evenly spaced, ends included); for numbers `0.5-1.5 (+0.25)` and `1-2 [3]`. Prompt S/R searches the
prompts for the first value and puts each value in its place; Prompt order plots every order of its values
(tokens of the prompt). "LoRA weight" is Inkwash's own axis (A1111
has none; it sits after A1111's list): it rewrites the weight of a `<lora:NAME:w>` tag in the prompt,
values `0.5` (the prompt's only LoRA tag) or `NAME:0.5`, ranges included (`NAME:0-1 [3]`).
Axes A1111 has and Inkwash can't vary are listed, so the indices line up, and refused by name.
"""
from __future__ import annotations

import csv
import io
import itertools
import math
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..nodes.folders import Folders
from ..nodes.formats.png_metadata import HIRES_UPSCALERS
from ..nodes.formats.sampler_names import A1111_SAMPLERS, A1111_SCHEDULES
from .bad_request import BadRequest
from .parameters import RANDOM_SEEDS, GenerationParams, model_upscalers

MAX_VALUES = 1000  # values on one axis


@dataclass(frozen=True)
class Axis:
    label: str  # A1111's
    kind: str  # "int", "float", "str", "order" or "lora" (how values are read)
    apply: Callable[[GenerationParams, Any, list], GenerationParams] | None  # None: not available here
    mode: str | None = None  # "txt2img" / "img2img": listed in that tab's list only
    choices: str | None = None  # the folder (or list) the tabs offer values from
    cost: float = 0.0  # A1111's: the costliest axis changes least often
    with_label: bool = True  # the label is "Label: value" (A1111's format_value_add_label)

    @property
    def available(self) -> bool:
        return self.apply is not None


def _field(name: str) -> Callable[[GenerationParams, Any, list], GenerationParams]:
    def apply(params: GenerationParams, value: Any, _values: list) -> GenerationParams:
        return changed(params, **{name: value})
    return apply


def changed(params: GenerationParams, **values: Any) -> GenerationParams:
    """A checked copy of `params` with `values` (BadRequest naming the field)."""
    return GenerationParams(**{**dict(params), **values})


def _prompt_sr(params: GenerationParams, value: str, values: list) -> GenerationParams:
    search = values[0]
    if search not in params.prompt and search not in params.negative_prompt:
        raise BadRequest("Prompt S/R", f"{search!r} (the first value) is not in the prompt or negative prompt")
    return changed(params, prompt=params.prompt.replace(search, value),
                   negative_prompt=params.negative_prompt.replace(search, value))


def _prompt_order(params: GenerationParams, order: tuple[str, ...], _values: list) -> GenerationParams:
    """A1111's prompt order: the tokens' places in the prompt, filled with the tokens in `order`."""
    prompt = params.prompt
    missing = [token for token in order if token not in prompt]
    if missing:
        raise BadRequest("Prompt order", f"{missing[0]!r} is not in the prompt")
    parts = []
    for _, token in sorted((prompt.find(token), token) for token in order):
        at = prompt.find(token)
        parts.append(prompt[:at])
        prompt = prompt[at + len(token):]
    return changed(params, prompt="".join(part + token for part, token in zip(parts, order)) + prompt)


def _none_or(value: str, nones: tuple[str, ...] = ("None", "none", "")) -> str | None:
    return None if value in nones else value


def _size(params: GenerationParams, value: str, _values: list) -> GenerationParams:
    width, x, height = value.lower().partition("x")
    try:
        return changed(params, width=int(width.strip()), height=int(height.strip()))
    except ValueError:
        raise BadRequest("Size", f"expected WIDTHxHEIGHT, got {value!r}") from None


_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)((?::[^>]*)?)>")


def _lora_weight(params: GenerationParams, value: tuple[str | None, float], _values: list) -> GenerationParams:
    name, weight = value
    tags = [m for m in _LORA_TAG.finditer(params.prompt) if name is None or _same_lora(m.group(2), name)]
    if name is None and len(tags) != 1:
        found = ", ".join(m.group(0) for m in tags) or "none"
        raise BadRequest("LoRA weight", f"a bare weight needs exactly one <lora:NAME:w> tag in the prompt "
                                        f"(found {found}); write NAME:weight")
    if not tags:
        raise BadRequest("LoRA weight", f"the prompt has no <lora:{name}:...> tag")

    def rewrite(match: re.Match) -> str:
        if name is not None and not _same_lora(match.group(2), name):
            return match.group(0)
        return f"<{match.group(1)}:{match.group(2)}:{_number(weight)}>"

    return changed(params, prompt=_LORA_TAG.sub(rewrite, params.prompt))


def _same_lora(tag_name: str, name: str) -> bool:
    tag_name = tag_name.strip()
    return name in (tag_name, os.path.splitext(tag_name)[0])


# A1111's axis_options, in its order (v1.10); each tab lists those without a mode and its own.
AXES: tuple[Axis, ...] = (
    Axis("Nothing", "str", lambda params, value, values: params, with_label=False),
    Axis("Seed", "int", _field("seed")),
    Axis("Var. seed", "int", _field("subseed")),
    Axis("Var. strength", "float", _field("subseed_strength")),
    Axis("Steps", "int", _field("steps")),
    Axis("Hires steps", "int", _field("hr_second_pass_steps"), mode="txt2img"),
    Axis("CFG Scale", "float", _field("cfg_scale")),
    Axis("Image CFG Scale", "float", None, mode="img2img"),
    Axis("Prompt S/R", "str", _prompt_sr, with_label=False),
    Axis("Prompt order", "order", _prompt_order, with_label=False),
    Axis("Sampler", "str", _field("sampler_name"), mode="txt2img", choices="samplers", with_label=False),
    Axis("Hires sampler", "str", _field("hr_sampler_name"), mode="txt2img", choices="samplers"),
    Axis("Sampler", "str", _field("sampler_name"), mode="img2img", choices="samplers", with_label=False),
    Axis("Checkpoint name", "str", _field("checkpoint"), choices="checkpoints", cost=1.0, with_label=False),
    Axis("Negative Guidance minimum sigma", "float", None),
    Axis("Sigma Churn", "float", None),
    Axis("Sigma min", "float", None),
    Axis("Sigma max", "float", None),
    Axis("Sigma noise", "float", None),
    Axis("Schedule type", "str", _field("scheduler"), choices="schedulers"),
    Axis("Schedule min sigma", "float", None),
    Axis("Schedule max sigma", "float", None),
    Axis("Schedule rho", "float", None),
    Axis("Skip Early CFG", "float", None),
    Axis("Beta schedule alpha", "float", None),
    Axis("Beta schedule beta", "float", None),
    Axis("Eta", "float", None),
    Axis("Clip skip", "int", _field("clip_skip")),
    Axis("Denoising", "float", _field("denoising_strength")),
    Axis("Initial noise multiplier", "float", None),
    Axis("Extra noise", "float", None),
    Axis("Hires upscaler", "str", _field("hr_upscaler"), mode="txt2img", choices="upscalers"),
    Axis("Cond. Image Mask Weight", "float", None, mode="img2img"),
    Axis("VAE", "str", lambda p, value, values: changed(p, vae=_none_or(value, ("Automatic", "None", ""))),
         choices="vae", cost=0.7),
    Axis("Styles", "str", None),
    Axis("UniPC Order", "int", None),
    Axis("Face restore", "str", None),
    Axis("Token merging ratio", "float", None),
    Axis("Token merging ratio high-res", "float", None),
    Axis("Always discard next-to-last sigma", "str", None),
    Axis("SGM noise multiplier", "str", None),
    Axis("Refiner checkpoint", "str", lambda p, value, values: changed(p, refiner_checkpoint=_none_or(value)),
         choices="refiners", cost=1.0, with_label=False),
    Axis("Refiner switch at", "float", _field("refiner_switch_at")),
    Axis("RNG source", "str", None),
    Axis("FP8 mode", "str", None),
    Axis("Size", "str", _size),
    Axis("LoRA weight", "lora", _lora_weight),  # Inkwash's own, after A1111's
)


def axes_for(mode: str) -> list[Axis]:
    """The axis list of the txt2img or img2img tab (A1111's `current_axis_options`): the index an API
    client sends is a position in this list."""
    tab = "img2img" if mode != "txt2img" else "txt2img"
    return [axis for axis in AXES if axis.mode in (None, tab)]


def find_axis(mode: str, chosen: Any, which: str) -> Axis:
    """The axis an index (A1111's script_args) or a label names; BadRequest naming the axis otherwise."""
    axes = axes_for(mode)
    if isinstance(chosen, bool):
        raise BadRequest(f"{which} type", f"expected an axis index or name, got {chosen!r}")
    if isinstance(chosen, str) and chosen.strip().lstrip("-").isdigit():
        chosen = int(chosen)
    if isinstance(chosen, float) and chosen.is_integer():
        chosen = int(chosen)
    if isinstance(chosen, int):
        if not 0 <= chosen < len(axes):
            raise BadRequest(f"{which} type", f"axis index {chosen} is out of range 0-{len(axes) - 1} for {mode}")
        axis = axes[chosen]
    elif isinstance(chosen, str):
        axis = next((a for a in axes if a.label.lower() == chosen.strip().lower()), None)
        if axis is None:
            raise BadRequest(f"{which} type", f"unknown axis {chosen!r}; available: "
                                              + ", ".join(a.label for a in axes if a.available))
    else:
        raise BadRequest(f"{which} type", f"expected an axis index or name, got {chosen!r}")
    if not axis.available:
        raise BadRequest(f"{which} type", f"the {axis.label!r} axis is not available in Inkwash")
    return axis


def choices(axis: Axis, folders: Folders) -> list[str]:
    """The values a choice axis can take (A1111's fill button), in A1111's names; [] for other axes."""
    listed = {
        "samplers": lambda: list(A1111_SAMPLERS),
        "schedulers": lambda: list(A1111_SCHEDULES),
        "checkpoints": lambda: folders.list("checkpoints"),
        "refiners": lambda: ["None", *folders.list("checkpoints")],
        "vae": lambda: ["Automatic", *folders.list("vae")],
        "upscalers": lambda: [*HIRES_UPSCALERS, *model_upscalers(folders)],
    }
    return listed[axis.choices]() if axis.choices in listed else []


def csv_line(values: list[str]) -> str:
    """Values as one CSV line (A1111's list_to_csv_string), quoted where they hold a comma."""
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().strip()


# -- values --------------------------------------------------------------------------------------------

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*\d+(?:\.\d*)?"
RANGE_INT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_INT_COUNT = re.compile(rf"\s*({_INT})\s*-\s*({_INT})\s*\[(\d+)\s*\]\s*")
RANGE_FLOAT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RANGE_FLOAT_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[(\d+)\s*\]\s*")


def split_values(text: str) -> list[str]:
    """A1111's csv_string_to_list_strip: CSV (quotes keep commas), each value stripped, empties dropped."""
    rows = csv.reader(io.StringIO(text or ""), skipinitialspace=True)
    return [value.strip() for row in rows for value in row if value.strip()]


def _linspace(start: float, stop: float, count: int) -> list[float]:
    if count == 1:
        return [start]
    return [start + (stop - start) * i / (count - 1) for i in range(count)]


def _int_values(text: str) -> list[int]:
    if match := RANGE_INT.fullmatch(text):
        start, end = (int(g.replace(" ", "")) for g in match.group(1, 2))
        step = int(match.group(3)) if match.group(3) else 1
        if step == 0:
            raise ValueError(f"range {text!r} has a step of 0")
        return list(range(start, end + (1 if step > 0 else -1), step))
    if match := RANGE_INT_COUNT.fullmatch(text):
        start, end = (int(g.replace(" ", "")) for g in match.group(1, 2))
        return [int(v) for v in _linspace(start, end, int(match.group(3)))]
    try:
        return [int(text)]
    except ValueError:
        raise ValueError(f"{text!r} is not an integer or a range (1-5, 1-5 (+2), 1-10 [5])") from None


def _float_values(text: str) -> list[float]:
    if match := RANGE_FLOAT.fullmatch(text):
        start, end = (float(g.replace(" ", "")) for g in match.group(1, 2))
        step = float(match.group(3)) if match.group(3) else 1.0
        if step == 0:
            raise ValueError(f"range {text!r} has a step of 0")
        count = int((end - start) / step + 1e-9) + 1
        return [round(start + i * step, 10) for i in range(max(count, 0))]
    if match := RANGE_FLOAT_COUNT.fullmatch(text):
        start, end = (float(g.replace(" ", "")) for g in match.group(1, 2))
        return _linspace(start, end, int(match.group(3)))
    try:
        return [float(text)]
    except ValueError:
        raise ValueError(f"{text!r} is not a number or a range (0.5-1.5 (+0.25), 1-2 [3])") from None


def _lora_values(text: str) -> list[tuple[str | None, float]]:
    name, colon, weights = text.rpartition(":")
    return [(name.strip() if colon else None, weight) for weight in _float_values(weights)]


READERS = {"int": _int_values, "float": _float_values, "lora": _lora_values, "str": lambda text: [text]}


def parse_values(axis: Axis, text: str, which: str = "X") -> list:
    """An axis's values from its text, ranges expanded; BadRequest naming the axis for what can't be read
    or a range that gives nothing."""
    if axis.label == "Nothing":
        return [None]
    items = split_values(text)
    if not items:
        raise BadRequest(f"{which} values", f"no values for the {axis.label!r} axis")
    if axis.kind == "order":  # every order of the tokens
        if math.factorial(len(items)) > MAX_VALUES:
            raise BadRequest(f"{which} values", f"{axis.label}: {len(items)} tokens have too many orders")
        return list(itertools.permutations(items))
    values: list = []
    for item in items:
        try:
            expanded = READERS[axis.kind](item)
        except ValueError as exc:
            raise BadRequest(f"{which} values", f"{axis.label}: {exc}") from None
        if not expanded:
            raise BadRequest(f"{which} values", f"{axis.label}: the range {item!r} has no values")
        values += expanded
        if len(values) > MAX_VALUES:
            raise BadRequest(f"{which} values", f"{axis.label}: more than {MAX_VALUES} values")
    return values


SEED_AXES = ("Seed", "Var. seed")


def fix_seeds(axis: Axis, values: list) -> list:
    """A seed axis's -1 values drawn once (A1111's fix_axis_seeds), so every cell of a row or column shares it."""
    if axis.label not in SEED_AXES:
        return values
    return [random.randrange(RANDOM_SEEDS) if value is None or value == -1 else value for value in values]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{round(value, 8)}"


def value_label(axis: Axis, value: Any) -> str:
    """How a value is written on the grid (A1111's format_value / format_value_add_label)."""
    if axis.label == "Nothing":
        return ""
    if axis.kind == "lora":
        name, weight = value
        return f"{name or axis.label}: {_number(weight)}"
    if axis.kind == "order":
        return ", ".join(value)
    shown = round(value, 8) if isinstance(value, float) else value
    if axis.label in ("Checkpoint name", "Refiner checkpoint"):
        shown = os.path.basename(str(value))
    return f"{axis.label}: {shown}" if axis.with_label else str(shown)
