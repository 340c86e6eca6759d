"""SaveImageWebsocket: ComfyUI's node that sends images to the client over /ws instead of saving them.

Each image goes out as a PNG binary frame (nodes/formats/preview_frames.py) through the progress
channel, as ComfyUI's node does (progress value = index in the batch), so a client that collects the
binary frames while this node is executing gets the full-size images. Nothing is written to disk and
no metadata is embedded. It runs every time, even when its input is cached, as ComfyUI's does.
"""
from __future__ import annotations

import uuid

from ..declare import Input, Node, Result
from ..formats.preview_frames import ImageFrame
from ..runtime import images as imaging


class SaveImageWebsocket(Node):
    """Sends the input images to the websocket client as PNG binary frames."""

    inputs = (Input("images", "IMAGE"),)
    outputs = ()
    category = "api node/image"
    display_name = "SaveImageWebsocket"
    description = "Sends the images to the client over the websocket (PNG binary frames); saves nothing."
    output_node = True

    @classmethod
    def fingerprint(cls, **literal_inputs) -> str:
        return uuid.uuid4().hex  # never cached: the client is waiting for the frames on every run

    def run(self, images):
        pictures = imaging.tensor_to_pils(images)
        for index, picture in enumerate(pictures):
            self.ctx.progress(index, len(pictures), ImageFrame(picture, "PNG"))
        return Result(outputs=(), ui={})


NODES = {"SaveImageWebsocket": SaveImageWebsocket}
