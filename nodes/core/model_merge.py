"""Model merging nodes (ComfyUI's names and inputs): ModelMergeSimple and CLIPMergeSimple."""
from __future__ import annotations

from ..declare import Float, Input, Node, Output
from ..runtime import model_merge


class ModelMergeSimple(Node):
    """model1 * ratio + model2 * (1 - ratio), weight by weight."""

    inputs = (Input("model1", "MODEL"), Input("model2", "MODEL"),
              Float("ratio", default=1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("MODEL"),)
    category = "advanced/model_merging"

    def run(self, model1, model2, ratio):
        return (model_merge.merge_models(model1, model2, ratio),)


class CLIPMergeSimple(Node):
    """clip1 * ratio + clip2 * (1 - ratio), weight by weight."""

    inputs = (Input("clip1", "CLIP"), Input("clip2", "CLIP"),
              Float("ratio", default=1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("CLIP"),)
    category = "advanced/model_merging"

    def run(self, clip1, clip2, ratio):
        return (model_merge.merge_clips(clip1, clip2, ratio),)


NODES = {"ModelMergeSimple": ModelMergeSimple, "CLIPMergeSimple": CLIPMergeSimple}
