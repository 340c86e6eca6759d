"""Which sampler previews a ComfyUI client gets on /ws, decided as ComfyUI decides it.

The server's `--preview-method` (ComfyUI's default: none) applies unless the prompt's extra_data
names one (the ComfyUI frontend's "Live preview method" setting sends it; "default" means the
server's). "latent2rgb" is the cheap linear map, "taesd" the family's TAESD decoder from
models/vae_approx/ (latent2rgb, with a warning, when there is none), "auto" TAESD when its file is
there and latent2rgb otherwise (nodes/runtime/latent_preview.py renders them). Jobs from the tabs and
the A1111 API name no method and get "auto": their live preview is shown whatever the ComfyUI
setting. Images an output node streams (SaveImageWebsocket) are sent whatever the method.
"""
from __future__ import annotations

METHODS = ("none", "auto", "latent2rgb", "taesd")
DEFAULT = "none"
FOR_OTHER_DOORS = "auto"  # jobs queued without a method: the tabs', the A1111 API's


def resolve(requested: object, server_default: str = DEFAULT) -> str:
    """The method for one prompt: the one it asked for, or the server's for anything else."""
    return requested if isinstance(requested, str) and requested in METHODS else server_default

