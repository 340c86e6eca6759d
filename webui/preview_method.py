"""Which sampler previews a ComfyUI client gets on /ws, decided as ComfyUI decides it.

The server's `--preview-method` (ComfyUI's default: none) applies unless the prompt's extra_data
names one (the ComfyUI frontend's "Live preview method" setting sends it; "default" means the
server's). Every method but "none" gives Inkwash's latent-to-RGB previews: "taesd" falls back to them,
as ComfyUI does when it has no TAESD decoder. Images an output node streams (SaveImageWebsocket) are
sent whatever the method.
"""
from __future__ import annotations

METHODS = ("none", "auto", "latent2rgb", "taesd")
DEFAULT = "none"


def resolve(requested: object, server_default: str = DEFAULT) -> str:
    """The method for one prompt: the one it asked for, or the server's for anything else."""
    return requested if isinstance(requested, str) and requested in METHODS else server_default
