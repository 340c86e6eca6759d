"""ControlNetApplyAdvanced: guide sampling with a ControlNet and a control image."""
from __future__ import annotations

from ..declare import Float, Input, Node, Output
from ..runtime import control


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


NODES = {"ControlNetApplyAdvanced": ControlNetApplyAdvanced}
