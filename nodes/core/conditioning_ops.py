"""Conditioning nodes (ComfyUI's names and inputs): combine, concat, average, zero out, and where and when a
conditioning acts (area, mask, timestep range; the sampler reads these, runtime/cond_areas.py)."""
from __future__ import annotations

from ..declare import Combo, Float, Input, Node, Output, pixel_ints
from ..runtime import conditioning_ops
from ..runtime.cond_areas import with_values


class ConditioningCombine(Node):
    """Both conditionings together: the sampler averages their predictions."""

    inputs = (Input("conditioning_1", "CONDITIONING"), Input("conditioning_2", "CONDITIONING"))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "Conditioning (Combine)"

    def run(self, conditioning_1, conditioning_2):
        return (conditioning_ops.combine(conditioning_1, conditioning_2),)


class ConditioningAverage(Node):
    """conditioning_to * strength + conditioning_from * (1 - strength), token by token."""

    inputs = (Input("conditioning_to", "CONDITIONING"), Input("conditioning_from", "CONDITIONING"),
              Float("conditioning_to_strength", default=1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "Conditioning (Average)"

    def run(self, conditioning_to, conditioning_from, conditioning_to_strength):
        return (conditioning_ops.average(conditioning_to, conditioning_from, conditioning_to_strength),)


class ConditioningConcat(Node):
    """conditioning_from's tokens appended to conditioning_to's."""

    inputs = (Input("conditioning_to", "CONDITIONING"), Input("conditioning_from", "CONDITIONING"))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "Conditioning (Concat)"

    def run(self, conditioning_to, conditioning_from):
        return (conditioning_ops.concat(conditioning_to, conditioning_from),)


class ConditioningZeroOut(Node):
    """The conditioning with its text embeddings zeroed."""

    inputs = (Input("conditioning", "CONDITIONING"),)
    outputs = (Output("CONDITIONING"),)
    category = "advanced/conditioning"
    display_name = "ConditioningZeroOut"

    def run(self, conditioning):
        return (conditioning_ops.zero_out(conditioning),)


class ConditioningSetArea(Node):
    """The conditioning acts on a box of the image (pixels, in steps of 8), weighted by strength."""

    inputs = (Input("conditioning", "CONDITIONING"),
              *pixel_ints("width", "height", default=64, min=64, step=8),
              *pixel_ints("x", "y", step=8),
              Float("strength", default=1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "Conditioning (Set Area)"

    def run(self, conditioning, width, height, x, y, strength):
        area = (height // 8, width // 8, y // 8, x // 8)  # latent cells
        return (with_values(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningSetAreaPercentage(Node):
    """The conditioning acts on a box given as fractions of the image, weighted by strength."""

    inputs = (Input("conditioning", "CONDITIONING"),
              Float("width", default=1.0, min=0, max=1.0, step=0.01),
              Float("height", default=1.0, min=0, max=1.0, step=0.01),
              Float("x", default=0, min=0, max=1.0, step=0.01),
              Float("y", default=0, min=0, max=1.0, step=0.01),
              Float("strength", default=1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "Conditioning (Set Area with Percentage)"

    def run(self, conditioning, width, height, x, y, strength):
        return (with_values(conditioning, area=("percentage", height, width, y, x), strength=strength,
                            set_area_to_bounds=False),)


class ConditioningSetMask(Node):
    """The conditioning acts where the mask is, weighted by it; "mask bounds" runs it on the mask's box only."""

    inputs = (Input("conditioning", "CONDITIONING"), Input("mask", "MASK"),
              Float("strength", default=1.0, min=0.0, max=10.0, step=0.01),
              Combo("set_cond_area", choices=("default", "mask bounds")))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "Conditioning (Set Mask)"

    def run(self, conditioning, mask, strength, set_cond_area):
        mask = mask.unsqueeze(0) if mask.ndim < 3 else mask
        return (with_values(conditioning, mask=mask, set_area_to_bounds=set_cond_area != "default",
                            mask_strength=strength),)


class ConditioningSetTimestepRange(Node):
    """The conditioning acts only from `start` to `end` of the schedule (fractions of the denoising)."""

    inputs = (Input("conditioning", "CONDITIONING"),
              Float("start", default=0.0, min=0.0, max=1.0, step=0.001),
              Float("end", default=1.0, min=0.0, max=1.0, step=0.001))
    outputs = (Output("CONDITIONING"),)
    category = "advanced/conditioning"
    display_name = "ConditioningSetTimestepRange"

    def run(self, conditioning, start, end):
        return (with_values(conditioning, start_percent=start, end_percent=end),)


NODES = {"ConditioningCombine": ConditioningCombine, "ConditioningAverage": ConditioningAverage,
         "ConditioningConcat": ConditioningConcat, "ConditioningZeroOut": ConditioningZeroOut,
         "ConditioningSetArea": ConditioningSetArea, "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
         "ConditioningSetMask": ConditioningSetMask, "ConditioningSetTimestepRange": ConditioningSetTimestepRange}
