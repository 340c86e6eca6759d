"""ControlNet preprocessors: ComfyUI's core Canny and comfyui_controlnet_aux's MiDaS depth map node."""
from __future__ import annotations

import math

from ..declare import Float, Input, Int, Node, Output
from ..runtime import annotators


class Canny(Node):
    """Detects edges; thresholds are fractions of the full intensity range."""

    inputs = (Input("image", "IMAGE"),
              Float("low_threshold", default=0.4, min=0.01, max=0.99, step=0.01),
              Float("high_threshold", default=0.8, min=0.01, max=0.99, step=0.01))
    outputs = (Output("IMAGE"),)
    category = "image/preprocessors"

    def run(self, image, low_threshold: float, high_threshold: float):
        return (annotators.canny(image, low_threshold, high_threshold),)


class MidasDepthMapPreprocessor(Node):
    """Estimates depth with MiDaS (DPT-Hybrid, models/annotators/dpt_hybrid-midas-501f0c75.pt), or, when
    that is not installed, with Inkwash's bundled small estimator (inkwash-demo-depth.safetensors)."""

    # Optional with defaults, as comfyui_controlnet_aux declares them; `a` and `bg_threshold` only shape
    # its normal map, and are kept so shared workflows validate unchanged.
    inputs = (Input("image", "IMAGE"),
              Float("a", default=math.pi * 2.0, min=0.0, max=math.pi * 5.0, step=0.01, optional=True),
              Float("bg_threshold", default=0.1, min=0.0, max=1.0, step=0.01, optional=True),
              Int("resolution", default=512, min=64, max=16384, step=64, optional=True))
    outputs = (Output("IMAGE"),)
    category = "ControlNet Preprocessors/Normal and Depth Estimators"
    display_name = "MiDaS Depth Map"

    def run(self, image, a: float = math.pi * 2.0, bg_threshold: float = 0.1, resolution: int = 512):
        return (annotators.depth_map(image, resolution, check_interrupt=self.ctx.check_interrupt, a=a,
                                      bg_threshold=bg_threshold),)


NODES = {
    "Canny": Canny,
    "MiDaS-DepthMapPreprocessor": MidasDepthMapPreprocessor,
}
