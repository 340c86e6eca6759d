"""ComfyUI's binary websocket frames: the sampler's previews and the images an output node streams.

A frame is `[u32 event][u32 image format][image bytes]`, big-endian: event 1 (PREVIEW_IMAGE), format
1 for JPEG or 2 for PNG. ComfyUI's SaveImageWebsocket sends its images as PNG frames through the same
path as previews; clients (its websockets_api_example_ws_images.py) keep `frame[8:]` as the image.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image

PREVIEW_IMAGE = 1
IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}


@dataclass(frozen=True)
class ImageFrame:
    """An image a node sends over the websocket as it is (not a preview): the `preview` of a progress
    event that is never dropped, and is sent whatever the preview method."""

    image: Image.Image
    format: str = "PNG"


def encode(image: Image.Image | ImageFrame) -> bytes:
    """The frame for a sampler preview (a PIL image: JPEG) or an ImageFrame (its own format)."""
    fmt = image.format if isinstance(image, ImageFrame) else "JPEG"
    picture = image.image if isinstance(image, ImageFrame) else image
    if fmt == "JPEG" and picture.mode != "RGB":
        picture = picture.convert("RGB")
    buffer = io.BytesIO()
    buffer.write(struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS[fmt]))
    picture.save(buffer, format=fmt, quality=95, compress_level=1)  # ComfyUI's send_image settings
    return buffer.getvalue()
