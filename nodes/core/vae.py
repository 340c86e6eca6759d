"""VAE nodes: VAEDecode, VAEEncode, VAEEncodeForInpaint."""
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
        return (vae_codec.decode(vae, samples["samples"]),)


class VAEEncode(Node):
    """Encodes images into latents, for image-to-image."""

    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"))
    outputs = (Output("LATENT"),)
    category = "latent"
    display_name = "VAE Encode"

    def run(self, pixels, vae):
        return ({"samples": vae_codec.encode(vae, pixels)},)


class VAEEncodeForInpaint(Node):
    """Encodes images with the masked area greyed out and sets the mask, for inpainting models."""

    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"), Input("mask", "MASK"),
              Int("grow_mask_by", default=6, min=0, max=64, step=1))
    outputs = (Output("LATENT"),)
    category = "latent/inpaint"
    display_name = "VAE Encode (for Inpainting)"

    def run(self, pixels, vae, mask, grow_mask_by):
        return (vae_codec.encode_for_inpaint(vae, pixels, mask, grow_mask_by),)


NODES = {"VAEDecode": VAEDecode, "VAEEncode": VAEEncode, "VAEEncodeForInpaint": VAEEncodeForInpaint}
