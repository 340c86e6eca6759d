"""HypernetworkLoader: an AUTOMATIC1111 hypernetwork applied to a model (ComfyUI's name and inputs)."""
from __future__ import annotations

import dataclasses

from .. import folders
from ..declare import Combo, Float, Input, Node, Output
from ..runtime import hypernetwork
from .loaders import model_file_signature


class HypernetworkLoader(Node):
    """Applies a hypernetwork to the model's attention layers while it samples; the loaded model is unchanged."""

    inputs = (Input("model", "MODEL"),
              Combo("hypernetwork_name", choices=lambda: folders.current().list("hypernetworks")),
              Float("strength", default=1.0, min=-10.0, max=10.0, step=0.01))
    outputs = (Output("MODEL"),)
    category = "loaders"

    @classmethod
    def fingerprint(cls, hypernetwork_name: str, **_):
        return model_file_signature("hypernetworks", hypernetwork_name)

    def run(self, model, hypernetwork_name: str, strength: float):
        layers = hypernetwork.read_hypernetwork(folders.current().find("hypernetworks", hypernetwork_name))
        dims = {m.to_k.in_features for name, m in model.unet.named_modules()
                if name.endswith(("attn1", "attn2")) and hasattr(m, "to_k")}
        if not dims & set(layers):
            raise hypernetwork.HypernetworkError(
                f"{hypernetwork_name}: its layers are for context widths {sorted(layers)}, this model's attention "
                f"takes {sorted(dims)}: is it a hypernetwork for another model family?")
        if strength == 0:
            return (model,)
        patch = hypernetwork.HypernetworkPatch(layers, strength, hypernetwork_name)
        return (dataclasses.replace(model, lora_patches=model.lora_patches + (patch,)),)


NODES = {"HypernetworkLoader": HypernetworkLoader}
