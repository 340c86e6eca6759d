"""Model loader nodes (and CheckpointSave), with ComfyUI's names, inputs and outputs."""
from __future__ import annotations

import threading

from .. import folders
from ..declare import Combo, Input, Node, Output, Result, String
from ..folders import UnsafePath
from ..runtime import lora, memory_manager, model_cache
from ..runtime.checkpoint_load import load_checkpoint, load_controlnet, load_vae
from ..runtime.checkpoint_save import save_checkpoint
from ..runtime.image_files import next_counter, resolve_prefix

# Choosing a counter and writing the file happen under this lock, so two saves never share a name.
_save_lock = threading.Lock()


def model_file_signature(kind: str, name: str):
    """A loader node's fingerprint: lets the executor notice a model file replaced under the same name."""
    return model_cache.file_signature(folders.current().find(kind, name))


def _cached(kind: str, name: str, loader):
    """Loaded into RAM in the precision of the device it will run on; the memory manager moves it."""
    path = folders.current().find(kind, name)
    dtype = memory_manager.shared().dtype()
    variant = (kind, "cpu", str(dtype))
    return model_cache.shared().get_or_load(path, lambda: loader(path, "cpu", dtype), variant)


class CheckpointLoaderSimple(Node):
    """Loads a diffusion model checkpoint; diffusion models are used to denoise latents."""

    inputs = (Combo("ckpt_name", choices=lambda: folders.current().list("checkpoints"),
                    tooltip="The name of the checkpoint (model) to load."),)
    outputs = (Output("MODEL", tooltip="The model used for denoising latents."),
               Output("CLIP", tooltip="The CLIP model used for encoding text prompts."),
               Output("VAE", tooltip="The VAE model used for encoding and decoding images to and from latent space."))
    category = "loaders"
    display_name = "Load Checkpoint"

    @classmethod
    def fingerprint(cls, ckpt_name: str, **_):
        return model_file_signature("checkpoints", ckpt_name)

    def run(self, ckpt_name: str):
        return _cached("checkpoints", ckpt_name, load_checkpoint)


class VAELoader(Node):
    """Loads a VAE."""

    inputs = (Combo("vae_name", choices=lambda: folders.current().list("vae")),)
    outputs = (Output("VAE"),)
    category = "loaders"
    display_name = "Load VAE"

    @classmethod
    def fingerprint(cls, vae_name: str, **_):
        return model_file_signature("vae", vae_name)

    def run(self, vae_name: str):
        return (_cached("vae", vae_name, load_vae),)


class ControlNetLoader(Node):
    """Loads a ControlNet model."""

    inputs = (Combo("control_net_name", choices=lambda: folders.current().list("controlnet")),)
    outputs = (Output("CONTROL_NET"),)
    category = "loaders"
    display_name = "Load ControlNet Model"

    @classmethod
    def fingerprint(cls, control_net_name: str, **_):
        return model_file_signature("controlnet", control_net_name)

    def run(self, control_net_name: str):
        return (_cached("controlnet", control_net_name, load_controlnet),)


class CheckpointSave(Node):
    """Saves a model, CLIP and VAE as one .safetensors checkpoint in the output folder."""

    inputs = (Input("model", "MODEL"), Input("clip", "CLIP"), Input("vae", "VAE"),
              String("filename_prefix", default="checkpoints/ComfyUI"))
    outputs = ()
    category = "advanced/model_merging"
    display_name = "Save Checkpoint"
    output_node = True

    @classmethod
    def check(cls, filename_prefix: str = "checkpoints/ComfyUI", **_) -> str | None:
        try:
            resolve_prefix(folders.current().output_dir, filename_prefix)
        except UnsafePath as err:
            return f"filename_prefix: {err}"
        return None

    def run(self, model, clip, vae, filename_prefix: str = "checkpoints/ComfyUI"):
        output_dir = folders.current().output_dir
        directory, subfolder, name = resolve_prefix(output_dir, filename_prefix)
        directory.mkdir(parents=True, exist_ok=True)
        if subfolder:  # re-checked once it exists, in case a symlink appeared on the way
            directory = folders.safe_path(output_dir, subfolder)
        metadata = {}
        if self.ctx.prompt:
            metadata["prompt"] = self.ctx.prompt
        metadata.update(self.ctx.extra_pnginfo)
        with _save_lock:
            path = directory / f"{name}_{next_counter(directory, name):05}_.safetensors"
            with lora.applied(model), lora.applied(clip):  # a LoRA'd model is saved with its LoRAs merged
                save_checkpoint(path, model, clip, vae, metadata=metadata)
        return Result(ui={"checkpoints": [{"filename": path.name, "subfolder": subfolder, "type": "output"}]})


NODES = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "VAELoader": VAELoader,
    "ControlNetLoader": ControlNetLoader,
    "CheckpointSave": CheckpointSave,
}
