"""Conditioning arithmetic nodes (ComfyUI's names and inputs): combine, concat, average, zero out."""
from __future__ import annotations

from ..declare import Float, Input, Node, Output
from ..runtime import conditioning_ops


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


NODES = {"ConditioningCombine": ConditioningCombine, "ConditioningAverage": ConditioningAverage,
         "ConditioningConcat": ConditioningConcat, "ConditioningZeroOut": ConditioningZeroOut}
