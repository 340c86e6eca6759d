"""Latent nodes: EmptyLatentImage, LatentUpscale, LatentUpscaleBy, SetLatentNoiseMask."""
from __future__ import annotations

from ..declare import MAX_RESOLUTION, Combo, Float, Input, Int, Node, Output, pixel_ints
from ..runtime import latents


class EmptyLatentImage(Node):
    """A batch of empty latents to start text-to-image sampling from."""

    inputs = (Int("width", default=512, min=16, max=MAX_RESOLUTION, step=8),
              Int("height", default=512, min=16, max=MAX_RESOLUTION, step=8),
              Int("batch_size", default=1, min=1, max=4096))
    outputs = (Output("LATENT"),)
    category = "latent"
    display_name = "Empty Latent Image"

    @classmethod
    def check(cls, width=512, height=512, batch_size=1, **_):
        return latents.size_error(width, height, batch_size)

    def run(self, width, height, batch_size):
        return (latents.empty(width, height, batch_size),)


class LatentUpscale(Node):
    """Resizes latents; a width or height of 0 keeps the aspect ratio."""

    inputs = (Input("samples", "LATENT"), Combo("upscale_method", choices=latents.UPSCALE_METHODS),
              *pixel_ints("width", "height", default=512, step=8),
              Combo("crop", choices=latents.CROP_METHODS))
    outputs = (Output("LATENT"),)
    category = "latent"
    display_name = "Upscale Latent"

    @classmethod
    def output_pixels(cls, samples, width: int, height: int, **_) -> int:
        batch, _, latent_height, latent_width = samples["samples"].shape[:4]
        width = width or round(latent_width * 8 * height / max(latent_height * 8, 1)) or latent_width * 8
        height = height or round(latent_height * 8 * width / max(latent_width * 8, 1))
        return batch * width * height

    def run(self, samples, upscale_method, width, height, crop):
        return (latents.upscale(samples, upscale_method, width, height, crop, self.ctx.check_interrupt),)


class LatentUpscaleBy(Node):
    """Resizes latents by a factor (hires fix's latent upscale)."""

    inputs = (Input("samples", "LATENT"), Combo("upscale_method", choices=latents.UPSCALE_METHODS),
              Float("scale_by", default=1.5, min=0.01, max=8.0, step=0.01))
    outputs = (Output("LATENT"),)
    category = "latent"
    display_name = "Upscale Latent By"

    @classmethod
    def output_pixels(cls, samples, scale_by: float, **_) -> int:
        batch, _, height, width = samples["samples"].shape[:4]
        return batch * round(height * scale_by * 8) * round(width * scale_by * 8)

    def run(self, samples, upscale_method, scale_by):
        return (latents.upscale_by(samples, upscale_method, scale_by, self.ctx.check_interrupt),)


class SetLatentNoiseMask(Node):
    """Limits denoising to the masked area (mask 1); the rest keeps the input latent."""

    inputs = (Input("samples", "LATENT"), Input("mask", "MASK"))
    outputs = (Output("LATENT"),)
    category = "latent/inpaint"
    display_name = "Set Latent Noise Mask"

    def run(self, samples, mask):
        return (latents.set_noise_mask(samples, mask),)


NODES = {"EmptyLatentImage": EmptyLatentImage, "LatentUpscale": LatentUpscale, "LatentUpscaleBy": LatentUpscaleBy,
         "SetLatentNoiseMask": SetLatentNoiseMask}
