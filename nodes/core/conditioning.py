"""Text conditioning nodes: CLIPTextEncode and CLIPSetLastLayer."""
from __future__ import annotations

import dataclasses

from ..declare import Input, Int, Node, Output, String
from ..runtime import text_encode


class CLIPTextEncode(Node):
    """Encodes a prompt with a CLIP model into the conditioning that guides sampling."""

    inputs = (String("text", multiline=True), Input("clip", "CLIP"))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "CLIP Text Encode (Prompt)"

    def run(self, text, clip):
        return (text_encode.encode(clip, text),)


class CLIPSetLastLayer(Node):
    """Stops the text encoder at an earlier layer: -2 is A1111's "Clip skip 2"."""

    inputs = (Input("clip", "CLIP"), Int("stop_at_clip_layer", default=-1, min=-24, max=-1, step=1))
    outputs = (Output("CLIP"),)
    category = "conditioning"
    display_name = "CLIP Set Last Layer"

    def run(self, clip, stop_at_clip_layer):
        return (dataclasses.replace(clip, stop_at_clip_layer=stop_at_clip_layer),)


NODES = {"CLIPTextEncode": CLIPTextEncode, "CLIPSetLastLayer": CLIPSetLastLayer}
