"""VAE nodes: VAEDecode, VAEEncode, VAEEncodeForInpaint, and the tiled VAEDecodeTiled and VAEEncodeTiled."""
from __future__ import annotations

from ..declare import Input, Int, Node, Output
from ..runtime import vae_codec


class VAEDecode(Node):
    """Decodes latents into images."""

    inputs = (Input("samples", "LATENT"), Input("vae", "VAE"))
    outputs = (Output("IMAGE"),)
    category = "latent"
    display_name = "VAE Decode"

    @classmethod
    def output_pixels(cls, samples, **_) -> int:
        batch, _, height, width = samples["samples"].shape[:4]
        return batch * height * 8 * width * 8

    def run(self, samples, vae):
        return (vae_codec.decode(vae, samples["samples"], self.ctx.check_interrupt),)


class VAEEncode(Node):
    """Encodes images into latents, for image-to-image."""

    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"))
    outputs = (Output("LATENT"),)
    category = "latent"
    display_name = "VAE Encode"

    def run(self, pixels, vae):
        return ({"samples": vae_codec.encode(vae, pixels, self.ctx.check_interrupt)},)


class VAEEncodeForInpaint(Node):
    """Encodes images with the masked area greyed out and sets the mask, for inpainting models."""

    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"), Input("mask", "MASK"),
              Int("grow_mask_by", default=6, min=0, max=64, step=1))
    outputs = (Output("LATENT"),)
    category = "latent/inpaint"
    display_name = "VAE Encode (for Inpainting)"

    def run(self, pixels, vae, mask, grow_mask_by):
        return (vae_codec.encode_for_inpaint(vae, pixels, mask, grow_mask_by, self.ctx.check_interrupt),)


def _tile_inputs(tile_step: int, what: str) -> tuple:
    return (Int("tile_size", default=512, min=64, max=4096, step=tile_step),
            Int("overlap", default=64, min=0, max=4096, step=32),
            Int("temporal_size", default=64, min=8, max=4096, step=4,
                tooltip=f"Only used for video VAEs: Amount of frames to {what} at a time."),
            Int("temporal_overlap", default=8, min=4, max=4096, step=4,
                tooltip="Only used for video VAEs: Amount of frames to overlap."))


class VAEDecodeTiled(Node):
    """Decodes latents tile by tile (overlapping tiles blended), so large images fit in memory."""

    inputs = (Input("samples", "LATENT"), Input("vae", "VAE"), *_tile_inputs(32, "decode"))
    outputs = (Output("IMAGE"),)
    category = "_for_testing"
    display_name = "VAE Decode (Tiled)"

    def run(self, samples, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8):
        # temporal_* only matter for video VAEs; SD's image VAEs have no time axis
        return (vae_codec.decode_tiled(vae, samples["samples"], tile_size, overlap,
                                         self.ctx.check_interrupt),)


class VAEEncodeTiled(Node):
    """Encodes images tile by tile (overlapping tiles blended), so large images fit in memory."""

    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"), *_tile_inputs(64, "encode"))
    outputs = (Output("LATENT"),)
    category = "_for_testing"
    display_name = "VAE Encode (Tiled)"

    def run(self, pixels, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8):
        return ({"samples": vae_codec.encode_tiled(vae, pixels, tile_size, overlap,
                                                          self.ctx.check_interrupt)},)


NODES = {"VAEDecode": VAEDecode, "VAEEncode": VAEEncode, "VAEEncodeForInpaint": VAEEncodeForInpaint,
         "VAEDecodeTiled": VAEDecodeTiled, "VAEEncodeTiled": VAEEncodeTiled}
