"""ControlNet nodes: apply a ControlNet and a control image to conditioning; load difference ControlNets."""
from __future__ import annotations

from .. import folders
from ..declare import Combo, Float, Input, Node, Output
from ..runtime import control, memory_manager
from ..runtime.checkpoint_load import load_controlnet
from .loaders import model_file_signature


class ControlNetApplyAdvanced(Node):
    """Adds a ControlNet hint to the positive and negative conditioning, active from start_percent to
    end_percent of the steps."""

    inputs = (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Input("control_net", "CONTROL_NET"), Input("image", "IMAGE"),
              Float("strength", default=1.0, min=0.0, max=10.0, step=0.01),
              Float("start_percent", default=0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", default=1.0, min=0.0, max=1.0, step=0.001),
              Input("vae", "VAE", optional=True))
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))
    category = "conditioning/controlnet"
    display_name = "Apply ControlNet"

    def run(self, positive, negative, control_net, image, strength, start_percent, end_percent, vae=None):
        # vae is for ControlNets that take latents (SD3, Flux); SD1/SD2/SDXL ones take pixels
        return control.apply(positive, negative, control_net, image, strength, start_percent, end_percent)


class ControlNetApply(Node):
    """ComfyUI's first Apply ControlNet: a hint on one conditioning for the whole schedule, which the
    sampler also gives to a negative conditioning that has no ControlNet of its own."""

    inputs = (Input("conditioning", "CONDITIONING"), Input("control_net", "CONTROL_NET"), Input("image", "IMAGE"),
              Float("strength", default=1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning/controlnet"
    display_name = "Apply ControlNet (OLD)"

    def run(self, conditioning, control_net, image, strength):
        return (control.apply_to_one(conditioning, control_net, image, strength),)


class DiffControlNetLoader(Node):
    """Loads a ControlNet; one stored as the difference from its base model gets `model`'s weights added."""

    inputs = (Input("model", "MODEL"),
              Combo("control_net_name", choices=lambda: folders.current().list("controlnet")))
    outputs = (Output("CONTROL_NET"),)
    category = "loaders"
    display_name = "Load ControlNet Model (diff)"

    @classmethod
    def fingerprint(cls, control_net_name: str, **_):
        return model_file_signature("controlnet", control_net_name)

    def run(self, model, control_net_name: str):
        path = folders.current().find("controlnet", control_net_name)
        return (load_controlnet(path, "cpu", memory_manager.shared().dtype(), base=model),)


NODES = {"ControlNetApplyAdvanced": ControlNetApplyAdvanced, "ControlNetApply": ControlNetApply,
         "DiffControlNetLoader": DiffControlNetLoader}
