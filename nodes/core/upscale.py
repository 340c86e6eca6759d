"""Upscale-model nodes, as ComfyUI names them: load an ESRGAN-family model, upscale images with it."""
from __future__ import annotations

from .. import folders
from ..declare import Combo, Input, Node, Output
from ..runtime import upscale_models
from .loaders import model_file_signature


class UpscaleModelLoader(Node):
    """Loads an image upscale model (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ...) from upscale_models."""

    inputs = (Combo("model_name", choices=lambda: folders.current().list("upscale_models")),)
    outputs = (Output("UPSCALE_MODEL"),)
    category = "loaders"
    display_name = "Load Upscale Model"

    @classmethod
    def fingerprint(cls, model_name: str, **_):
        return model_file_signature("upscale_models", model_name)

    def run(self, model_name: str):
        return (upscale_models.load(folders.current().find("upscale_models", model_name)),)


class ImageUpscaleWithModel(Node):
    """Upscales images by the model's scale, in overlapping tiles so that large images fit in memory."""

    inputs = (Input("upscale_model", "UPSCALE_MODEL"), Input("image", "IMAGE"))
    outputs = (Output("IMAGE"),)
    category = "image/upscaling"
    display_name = "Upscale Image (using Model)"

    def run(self, upscale_model, image):
        def on_tile(done: int, total: int) -> None:
            self.ctx.progress(done, total)

        return (upscale_models.upscale(upscale_model, image, on_tile=on_tile,
                                       check_interrupt=self.ctx.check_interrupt),)


NODES = {"UpscaleModelLoader": UpscaleModelLoader, "ImageUpscaleWithModel": ImageUpscaleWithModel}
