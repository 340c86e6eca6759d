"""Conditioning nodes: CLIPTextEncode, CLIPSetLastLayer and the depth map for 5-channel depth models."""
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


class ConditioningSetDepth(Node):
    """Attaches a depth map (e.g. from MiDaS-DepthMapPreprocessor) for SD 2.x depth checkpoints, whose UNet
    takes it as a fifth input channel; other models ignore it."""

    inputs = (Input("conditioning", "CONDITIONING"), Input("depth", "IMAGE"))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "Conditioning Set Depth"

    def run(self, conditioning, depth):
        return ([dataclasses.replace(c, extra={**c.extra, "depth": depth}) for c in conditioning],)


NODES = {"CLIPTextEncode": CLIPTextEncode, "CLIPSetLastLayer": CLIPSetLastLayer,
         "ConditioningSetDepth": ConditioningSetDepth}
