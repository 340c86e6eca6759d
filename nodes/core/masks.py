"""Mask nodes (ComfyUI's names and inputs): convert, make, invert, grow, feather and crop masks."""
from __future__ import annotations

from ..declare import MAX_RESOLUTION, Boolean, Combo, Float, Input, Int, Node, Output, pixel_ints
from ..runtime import masks


class ImageToMask(Node):
    """One channel of an image as a mask."""

    inputs = (Input("image", "IMAGE"), Combo("channel", choices=masks.IMAGE_CHANNELS))
    outputs = (Output("MASK"),)
    category = "mask"
    display_name = "Convert Image to Mask"

    def run(self, image, channel):
        return (masks.from_image(image, channel),)


class MaskToImage(Node):
    """A mask as a grey image."""

    inputs = (Input("mask", "MASK"),)
    outputs = (Output("IMAGE"),)
    category = "mask"
    display_name = "Convert Mask to Image"

    def run(self, mask):
        return (masks.to_image(mask),)


class SolidMask(Node):
    """A mask of one value."""

    inputs = (Float("value", default=1.0, min=0.0, max=1.0, step=0.01),
              *pixel_ints("width", "height", default=512, min=1, step=1))
    outputs = (Output("MASK"),)
    category = "mask"

    def run(self, value, width, height):
        return (masks.solid(value, width, height),)


class InvertMask(Node):
    """1 - mask."""

    inputs = (Input("mask", "MASK"),)
    outputs = (Output("MASK"),)
    category = "mask"

    def run(self, mask):
        return (masks.invert(mask),)


class GrowMask(Node):
    """Grows (or, negative, shrinks) a mask by `expand` pixels."""

    inputs = (Input("mask", "MASK"),
              Int("expand", default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
              Boolean("tapered_corners", default=True))
    outputs = (Output("MASK"),)
    category = "mask"

    def run(self, mask, expand, tapered_corners):
        return (masks.grow(mask, expand, tapered_corners),)


class FeatherMask(Node):
    """Fades a mask out towards its edges over the given widths."""

    inputs = (Input("mask", "MASK"),
              *pixel_ints("left", "top", "right", "bottom", step=1))
    outputs = (Output("MASK"),)
    category = "mask"

    def run(self, mask, left, top, right, bottom):
        return (masks.feather(mask, left, top, right, bottom),)


class CropMask(Node):
    """Crops a mask to width x height from (x, y)."""

    inputs = (Input("mask", "MASK"),
              *pixel_ints("x", "y", step=1),
              *pixel_ints("width", "height", default=512, min=1, step=1))
    outputs = (Output("MASK"),)
    category = "mask"

    def run(self, mask, x, y, width, height):
        return (masks.crop(mask, x, y, width, height),)


NODES = {"ImageToMask": ImageToMask, "MaskToImage": MaskToImage, "SolidMask": SolidMask, "InvertMask": InvertMask,
         "GrowMask": GrowMask, "FeatherMask": FeatherMask, "CropMask": CropMask}
