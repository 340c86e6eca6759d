"""Latent nodes that paste, blend, crop, flip, rotate and batch latents (ComfyUI's names and inputs)."""
from __future__ import annotations

from ..declare import MAX_RESOLUTION, Boolean, Combo, Float, Input, Int, Node, Output, pixel_ints
from ..runtime import latent_ops


class LatentComposite(Node):
    """Pastes samples_from onto samples_to at (x, y) pixels; feather fades the pasted edges in."""

    inputs = (Input("samples_to", "LATENT"), Input("samples_from", "LATENT"),
              *pixel_ints("x", "y", "feather", step=8))
    outputs = (Output("LATENT"),)
    category = "latent"
    display_name = "Latent Composite"

    def run(self, samples_to, samples_from, x, y, feather):
        return (latent_ops.paste(samples_to, samples_from, x, y, feather),)


class LatentCompositeMasked(Node):
    """Pastes source onto destination at (x, y) pixels through a mask (1 = source)."""

    inputs = (Input("destination", "LATENT"), Input("source", "LATENT"),
              *pixel_ints("x", "y", step=8),
              Boolean("resize_source", default=False),
              Input("mask", "MASK", optional=True))
    outputs = (Output("LATENT"),)
    category = "latent"
    display_name = "Latent Composite Masked"

    def run(self, destination, source, x, y, resize_source, mask=None):
        return (latent_ops.paste_masked(destination, source, x, y, resize_source, mask),)


class LatentBlend(Node):
    """samples1 * blend_factor + samples2 * (1 - blend_factor)."""

    inputs = (Input("samples1", "LATENT"), Input("samples2", "LATENT"),
              Float("blend_factor", default=0.5, min=0.0, max=1.0, step=0.01))
    outputs = (Output("LATENT"),)
    category = "_for_testing"
    display_name = "Latent Blend"

    def run(self, samples1, samples2, blend_factor):
        return (latent_ops.blend(samples1, samples2, blend_factor),)


class LatentFromBatch(Node):
    """Takes `length` latents of a batch from batch_index; each keeps the noise it had in the batch."""

    inputs = (Input("samples", "LATENT"),
              Int("batch_index", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION),
              Int("length", default=1, min=1, max=64))
    outputs = (Output("LATENT"),)
    category = "latent/batch"
    display_name = "Latent From Batch"

    def run(self, samples, batch_index, length):
        return (latent_ops.from_batch(samples, batch_index, length),)


class RepeatLatentBatch(Node):
    """Repeats a batch of latents `amount` times."""

    inputs = (Input("samples", "LATENT"), Int("amount", default=1, min=1, max=64))
    outputs = (Output("LATENT"),)
    category = "latent/batch"
    display_name = "Repeat Latent Batch"

    def run(self, samples, amount):
        return (latent_ops.repeat_batch(samples, amount),)


class LatentCrop(Node):
    """Crops latents to width x height pixels from (x, y)."""

    inputs = (Input("samples", "LATENT"),
              *pixel_ints("width", "height", default=512, min=64, step=8),
              *pixel_ints("x", "y", step=8))
    outputs = (Output("LATENT"),)
    category = "latent/transform"
    display_name = "Crop Latent"

    def run(self, samples, width, height, x, y):
        return (latent_ops.crop(samples, width, height, x, y),)


class LatentFlip(Node):
    """Flips latents vertically (x-axis) or horizontally (y-axis)."""

    inputs = (Input("samples", "LATENT"), Combo("flip_method", choices=latent_ops.FLIPS))
    outputs = (Output("LATENT"),)
    category = "latent/transform"
    display_name = "Flip Latent"

    def run(self, samples, flip_method):
        return (latent_ops.flip(samples, flip_method),)


class LatentRotate(Node):
    """Rotates latents clockwise by 90, 180 or 270 degrees."""

    inputs = (Input("samples", "LATENT"), Combo("rotation", choices=latent_ops.ROTATIONS))
    outputs = (Output("LATENT"),)
    category = "latent/transform"
    display_name = "Rotate Latent"

    def run(self, samples, rotation):
        return (latent_ops.rotate(samples, rotation),)


NODES = {"LatentComposite": LatentComposite, "LatentCompositeMasked": LatentCompositeMasked,
         "LatentBlend": LatentBlend, "LatentFromBatch": LatentFromBatch, "RepeatLatentBatch": RepeatLatentBatch,
         "LatentCrop": LatentCrop, "LatentFlip": LatentFlip, "LatentRotate": LatentRotate}
