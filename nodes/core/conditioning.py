"""Conditioning nodes: CLIPTextEncode, the SDXL encoders with size and aesthetic-score conditioning,
CLIPSetLastLayer and the depth map for 5-channel depth models."""
from __future__ import annotations

import dataclasses

from ..declare import Float, Input, Int, Node, Output, pixel_ints, String
from ..runtime import sdxl_conditioning, text_encode


class CLIPTextEncode(Node):
    """Encodes a prompt with a CLIP model into the conditioning that guides sampling."""

    inputs = (String("text", multiline=True), Input("clip", "CLIP"))
    outputs = (Output("CONDITIONING"),)
    category = "conditioning"
    display_name = "CLIP Text Encode (Prompt)"

    def run(self, text, clip):
        return (text_encode.encode(clip, text, self.ctx.check_interrupt),)


class CLIPTextEncodeSDXL(Node):
    """SDXL base prompt: text_g for CLIP-G, text_l for CLIP-L, with the size and crop conditioning
    (original size, crop offset, target size) the sampler adds to the time embedding."""

    inputs = (Input("clip", "CLIP"),
              *pixel_ints("width", "height", default=1024),
              *pixel_ints("crop_w", "crop_h"),
              *pixel_ints("target_width", "target_height", default=1024),
              String("text_g", multiline=True), String("text_l", multiline=True))
    outputs = (Output("CONDITIONING"),)
    category = "advanced/conditioning"
    display_name = "CLIP Text Encode (SDXL)"

    def run(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        conditioning = sdxl_conditioning.encode_g_and_l(clip, text_g, text_l)
        sizes = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                 "target_width": target_width, "target_height": target_height}
        return (sdxl_conditioning.with_extra(conditioning, sizes),)


class CLIPTextEncodeSDXLRefiner(Node):
    """SDXL refiner prompt, with the aesthetic score (6 is usual for the positive prompt, 2.5 for the
    negative) and original size the refiner's time embedding takes."""

    inputs = (Float("ascore", default=6.0, min=0.0, max=1000.0, step=0.01),
              *pixel_ints("width", "height", default=1024),
              String("text", multiline=True), Input("clip", "CLIP"))
    outputs = (Output("CONDITIONING"),)
    category = "advanced/conditioning"
    display_name = "CLIP Text Encode (SDXL Refiner)"

    def run(self, ascore, width, height, text, clip):
        extra = {"aesthetic_score": ascore, "width": width, "height": height}
        return (sdxl_conditioning.with_extra(text_encode.encode(clip, text, self.ctx.check_interrupt), extra),)


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


NODES = {"CLIPTextEncode": CLIPTextEncode, "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL,
         "CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner, "CLIPSetLastLayer": CLIPSetLastLayer,
         "ConditioningSetDepth": ConditioningSetDepth}
