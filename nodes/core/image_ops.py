"""Image nodes that crop, invert, batch, blend, paste and pad images (ComfyUI's names and inputs)."""
from __future__ import annotations

from ..declare import MAX_RESOLUTION, Boolean, Combo, Float, Input, Int, Node, Output, pixel_ints
from ..runtime import compositing


class ImageCrop(Node):
    """Crops images to width x height from (x, y)."""

    inputs = (Input("image", "IMAGE"),
              *pixel_ints("width", "height", default=512, min=1, step=1),
              *pixel_ints("x", "y", step=1))
    outputs = (Output("IMAGE"),)
    category = "image/transform"
    display_name = "Crop Image"

    def run(self, image, width, height, x, y):
        return (compositing.crop_image(image, width, height, x, y),)


class ImageInvert(Node):
    """Inverts image colours (alpha is kept)."""

    inputs = (Input("image", "IMAGE"),)
    outputs = (Output("IMAGE"),)
    category = "image"
    display_name = "Invert Image"

    def run(self, image):
        return (compositing.invert_image(image),)


class ImageBatch(Node):
    """Joins two batches of images; image2 is resized to image1's size."""

    inputs = (Input("image1", "IMAGE"), Input("image2", "IMAGE"))
    outputs = (Output("IMAGE"),)
    category = "image"
    display_name = "Batch Images"

    def run(self, image1, image2):
        return (compositing.batch_images(image1, image2),)


class ImageBlend(Node):
    """Blends image2 over image1 with a blend mode, by blend_factor."""

    inputs = (Input("image1", "IMAGE"), Input("image2", "IMAGE"),
              Float("blend_factor", default=0.5, min=0.0, max=1.0, step=0.01),
              Combo("blend_mode", choices=compositing.BLEND_MODES))
    outputs = (Output("IMAGE"),)
    category = "image/postprocessing"
    display_name = "Blend Images"

    def run(self, image1, image2, blend_factor, blend_mode):
        return (compositing.blend_images(image1, image2, blend_factor, blend_mode),)


class ImageCompositeMasked(Node):
    """Pastes source onto destination at (x, y) through a mask (1 = source)."""

    inputs = (Input("destination", "IMAGE"), Input("source", "IMAGE"),
              *pixel_ints("x", "y", step=1),
              Boolean("resize_source", default=False),
              Input("mask", "MASK", optional=True))
    outputs = (Output("IMAGE"),)
    category = "image"
    display_name = "Image Composite Masked"

    def run(self, destination, source, x, y, resize_source, mask=None):
        return (compositing.composite_images(destination, source, x, y, resize_source, mask),)


class ImagePadForOutpaint(Node):
    """Grows the canvas for outpainting; the mask covers the new border (feathered into the image)."""

    inputs = (Input("image", "IMAGE"),
              *pixel_ints("left", "top", "right", "bottom", step=8),
              Int("feathering", default=40, min=0, max=MAX_RESOLUTION, step=1))
    outputs = (Output("IMAGE"), Output("MASK"))
    category = "image"
    display_name = "Pad Image for Outpainting"

    def run(self, image, left, top, right, bottom, feathering):
        return compositing.pad_for_outpaint(image, left, top, right, bottom, feathering)


NODES = {"ImageCrop": ImageCrop, "ImageInvert": ImageInvert, "ImageBatch": ImageBatch, "ImageBlend": ImageBlend,
         "ImageCompositeMasked": ImageCompositeMasked, "ImagePadForOutpaint": ImagePadForOutpaint}
