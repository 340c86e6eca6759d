"""SaveLatent and LoadLatent: latents as ComfyUI's .latent files in the output and input folders."""
from __future__ import annotations

import hashlib
import threading

from .. import folders
from ..declare import Combo, Input, Node, Output, Result, String
from ..folders import UnsafePath
from ..runtime import latent_files
from ..runtime.image_files import next_counter, resolve_prefix

# Choosing a counter and writing the file happen under this lock, so two saves never share a name.
_save_lock = threading.Lock()


def input_latents() -> list[str]:
    """The .latent files directly in the input folder (as ComfyUI lists them)."""
    root = folders.current().input_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_file() and p.name.endswith(latent_files.EXTENSION))


def _input_file(name: str):
    path = folders.safe_path(folders.current().input_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"latent file {name!r} not found in the input folder")
    return path


class SaveLatent(Node):
    """Saves latents to the output folder as a .latent file, with the workflow in its metadata."""

    inputs = (Input("samples", "LATENT"), String("filename_prefix", default="latents/ComfyUI"))
    outputs = ()
    category = "_for_testing"
    display_name = "Save Latent"
    output_node = True

    @classmethod
    def check(cls, filename_prefix: str = "latents/ComfyUI", **_) -> str | None:
        try:
            resolve_prefix(folders.current().output_dir, filename_prefix)
        except UnsafePath as err:
            return f"filename_prefix: {err}"
        return None

    def run(self, samples, filename_prefix: str = "latents/ComfyUI"):
        output_dir = folders.current().output_dir
        directory, subfolder, name = resolve_prefix(output_dir, filename_prefix)
        directory.mkdir(parents=True, exist_ok=True)
        if subfolder:  # re-checked once it exists, in case a symlink appeared on the way
            directory = folders.safe_path(output_dir, subfolder)
        metadata = latent_files.workflow_metadata(self.ctx.prompt, self.ctx.extra_pnginfo)
        with _save_lock:
            path = directory / f"{name}_{next_counter(directory, name):05}_{latent_files.EXTENSION}"
            folders.write_atomically(path, latent_files.to_bytes(samples["samples"], metadata))
        return Result(ui={"latents": [{"filename": path.name, "subfolder": subfolder, "type": "output"}]})


class LoadLatent(Node):
    """Loads latents from a .latent file in the input folder."""

    inputs = (Combo("latent", choices=input_latents),)
    outputs = (Output("LATENT"),)
    category = "_for_testing"
    display_name = "Load Latent"

    @classmethod
    def check(cls, latent: str, **_) -> str | None:
        try:
            _input_file(latent)
        except (UnsafePath, FileNotFoundError) as err:
            return f"Invalid latent file: {err}"
        return None

    @classmethod
    def fingerprint(cls, latent: str, **_) -> str:
        return hashlib.sha256(_input_file(latent).read_bytes()).hexdigest()

    def run(self, latent: str):
        return (latent_files.load(_input_file(latent)),)


NODES = {"SaveLatent": SaveLatent, "LoadLatent": LoadLatent}
