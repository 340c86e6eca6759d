"""How a node is declared: typed inputs and outputs, once.

Validation (nodes/graph.py), the ComfyUI-shaped `object_info` schema and the UI widgets are all derived
from these declarations, so a node class states each input exactly once. This module imports no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

# Value types that travel along links. Widget types (INT, FLOAT, STRING, BOOLEAN, combos) may also be
# linked, from a node whose output has the same type.
ANY = "*"


class InputError(ValueError):
    """A literal input value that cannot be used; `kind` is a ComfyUI node-error type."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Input:
    """An input that only takes a link of `type` (MODEL, LATENT, IMAGE, ...)."""

    name: str
    type: str
    optional: bool = False
    tooltip: str | None = None
    default: Any = None
    # an input Inkwash adds to one of ComfyUI's nodes (optional, after ComfyUI's): a workflow saved by ComfyUI
    # has no value for its widget, which readers of positional widget values need to know
    added: bool = False

    has_widget: ClassVar[bool] = False

    def coerce(self, value: Any) -> Any:
        raise InputError("invalid_input_type", f"expects a link to a {self.type} output, got a literal value")

    def options(self) -> dict:
        opts: dict = {}
        if self.default is not None:
            opts["default"] = self.default
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        if self.added:
            opts["inkwash_added"] = True
        return opts

    def schema(self) -> list:
        """The `[type, options]` pair ComfyUI's /object_info uses for this input."""
        return [self.type, self.options()]


@dataclass(frozen=True)
class _Number(Input):
    min: float | None = None
    max: float | None = None
    step: float | None = None

    has_widget: ClassVar[bool] = True

    def _check_bounds(self, value):
        if self.min is not None and value < self.min:
            raise InputError("value_smaller_than_min", f"Value {value} smaller than min of {self.min}")
        if self.max is not None and value > self.max:
            raise InputError("value_bigger_than_max", f"Value {value} bigger than max of {self.max}")
        return value

    def options(self) -> dict:
        opts = super().options()
        for key in ("min", "max", "step"):
            if getattr(self, key) is not None:
                opts[key] = getattr(self, key)
        return opts


@dataclass(frozen=True)
class Int(_Number):
    type: str = "INT"
    control_after_generate: bool = False

    def coerce(self, value: Any) -> int:
        if isinstance(value, bool):
            raise InputError("invalid_input_type", f"expects an integer, got {value!r}")
        try:
            as_float = float(value)
            if not math.isfinite(as_float) or as_float != int(as_float):
                raise ValueError
            number = int(value) if isinstance(value, int) else int(as_float)
        except (TypeError, ValueError, OverflowError):
            raise InputError("invalid_input_type", f"expects an integer, got {value!r}") from None
        return self._check_bounds(number)

    def options(self) -> dict:
        opts = super().options()
        if self.control_after_generate:
            opts["control_after_generate"] = True
        return opts


MAX_RESOLUTION = 16384  # ComfyUI's bound on sizes and positions in pixels


def pixel_ints(*names: str, default: int = 0, min: int = 0, step: int | None = None) -> tuple[Int, ...]:
    """Size or position inputs in pixels that share bounds (ComfyUI's width/height, x/y, left/top/...)."""
    return tuple(Int(name, default=default, min=min, max=MAX_RESOLUTION, step=step) for name in names)


@dataclass(frozen=True)
class Float(_Number):
    type: str = "FLOAT"
    round: float | None = None

    def coerce(self, value: Any) -> float:
        if isinstance(value, bool):
            raise InputError("invalid_input_type", f"expects a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError("invalid_input_type", f"expects a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InputError("invalid_input_type", f"expects a finite number, got {value!r}")
        return self._check_bounds(number)

    def options(self) -> dict:
        opts = super().options()
        if self.round is not None:
            opts["round"] = self.round
        return opts


@dataclass(frozen=True)
class String(Input):
    type: str = "STRING"
    multiline: bool = False
    max_length: int = 100_000

    has_widget: ClassVar[bool] = True

    def coerce(self, value: Any) -> str:
        if isinstance(value, (dict, list)) or value is None:
            raise InputError("invalid_input_type", f"expects text, got {type(value).__name__}")
        text = str(value)
        if len(text) > self.max_length:
            raise InputError("value_bigger_than_max", f"text longer than {self.max_length} characters")
        return text

    def options(self) -> dict:
        opts = super().options()
        if self.multiline:
            opts["multiline"] = True
            opts["dynamicPrompts"] = True
        return opts


@dataclass(frozen=True)
class Boolean(Input):
    type: str = "BOOLEAN"

    has_widget: ClassVar[bool] = True

    def coerce(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InputError("invalid_input_type", f"expects true or false, got {value!r}")


@dataclass(frozen=True)
class Combo(Input):
    """A choice among strings. `choices` may be a callable, so file lists are read when asked for."""

    type: str = "COMBO"
    choices: Sequence[str] | Callable[[], Sequence[str]] = ()
    image_upload: bool = False

    has_widget: ClassVar[bool] = True

    def current_choices(self) -> list[str]:
        return list(self.choices() if callable(self.choices) else self.choices)

    def coerce(self, value: Any) -> str:
        choices = self.current_choices()
        if not isinstance(value, str) or value not in choices:
            shown = ", ".join(choices[:20]) + (" ..." if len(choices) > 20 else "")
            raise InputError("value_not_in_list", f"Value not in list: {value!r} not in [{shown}]")
        return value

    def options(self) -> dict:
        opts = super().options()
        if self.image_upload:
            opts["image_upload"] = True
        return opts

    def schema(self) -> list:
        return [self.current_choices(), self.options()]


@dataclass(frozen=True)
class Output:
    type: str
    name: str | None = None
    tooltip: str | None = None


@dataclass
class Result:
    """What an output node returns: its outputs plus the `ui` dict sent in the `executed` event."""

    outputs: tuple = ()
    ui: dict = field(default_factory=dict)


class NodeContext:
    """What a running node may ask of the executor: report progress, notice an interrupt."""

    def __init__(self, node_id: str = "", prompt: dict | None = None, extra_pnginfo: dict | None = None,
                 on_progress: Callable[[int, int, Any], None] | None = None,
                 is_interrupted: Callable[[], bool] | None = None):
        self.node_id = node_id
        self.prompt = prompt or {}
        self.extra_pnginfo = extra_pnginfo or {}
        self._on_progress = on_progress
        self._is_interrupted = is_interrupted

    def check_interrupt(self) -> None:
        if self._is_interrupted is not None and self._is_interrupted():
            raise Interrupted()

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Report step `value` of `total` (with an optional preview image) and stop here if interrupted."""
        if self._on_progress is not None:
            self._on_progress(value, total, preview)
        self.check_interrupt()


class Interrupted(Exception):
    """Raised inside a node when the user interrupts; the executor turns it into `execution_interrupted`."""


class Node:
    """Base class of every node: declare `inputs` and `outputs`, implement `run`.

    `run(**inputs)` returns a tuple of outputs in declared order, or a `Result` for output nodes.
    """

    inputs: ClassVar[Sequence[Input]] = ()
    outputs: ClassVar[Sequence[Output]] = ()
    category: ClassVar[str] = ""
    display_name: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    output_node: ClassVar[bool] = False

    def __init__(self, ctx: NodeContext | None = None):
        self.ctx = ctx or NodeContext()

    @classmethod
    def fingerprint(cls, **literal_inputs) -> Any:
        """Extra value for the cache key, for nodes whose result depends on more than their inputs
        (a file's content, say). Return None when inputs alone decide the result."""
        return None

    @classmethod
    def check(cls, **literal_inputs) -> str | None:
        """Custom validation of literal inputs; return an error message or None."""
        return None

    @classmethod
    def output_pixels(cls, **inputs) -> int | None:
        """For nodes whose output size follows from their inputs (resizing, decoding): width x height x
        batch of the image the inputs would make, so the executor can refuse it before it is allocated.
        None when the node makes nothing bigger than what it is given."""
        return None

    def run(self, **inputs):  # pragma: no cover - every node overrides it
        raise NotImplementedError

    @classmethod
    def input(cls, name: str) -> Input | None:
        return next((i for i in cls.inputs if i.name == name), None)

    @classmethod
    def object_info(cls, name: str) -> dict:
        """This node's entry in ComfyUI's /object_info."""
        required = {i.name: i.schema() for i in cls.inputs if not i.optional}
        optional = {i.name: i.schema() for i in cls.inputs if i.optional}
        info_inputs: dict = {"required": required}
        if optional:
            info_inputs["optional"] = optional
        info_inputs["hidden"] = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"} if cls.output_node else {}
        return {
            "input": info_inputs,
            "input_order": {"required": list(required), **({"optional": list(optional)} if optional else {})},
            "output": [o.type for o in cls.outputs],
            "output_is_list": [False for _ in cls.outputs],
            "output_name": [o.name or o.type for o in cls.outputs],
            "output_tooltips": [o.tooltip for o in cls.outputs],
            "name": name,
            "display_name": cls.display_name or name,
            "description": cls.description or (cls.__doc__ or "").strip().split("\n")[0],
            "python_module": "nodes",
            "category": cls.category,
            "output_node": cls.output_node,
            "deprecated": False,
            "experimental": False,
        }
