"""Image nodes: load from input/, save to output/ (with ComfyUI and A1111 metadata), preview, resize."""
from __future__ import annotations

import hashlib
import os
import secrets
import string
from pathlib import Path

from .. import folders
from ..declare import Combo, Float, Input, Int, Node, Output, Result, String
from ..formats import file_hashes, png_metadata
from ..runtime import image_files
from ..runtime import images as imaging

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def input_images() -> list[str]:
    """Image files in the input folder and its subfolders, as "/"-separated relative names."""
    root = folders.current().input_dir
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if filename.lower().endswith(IMAGE_EXTENSIONS) and not filename.startswith("."):
                names.append((Path(dirpath) / filename).relative_to(root).as_posix())
    return sorted(names)


def input_file(name: str) -> Path:
    """The input-folder file for a widget value; refuses names that leave the folder."""
    path = folders.safe_path(folders.current().input_dir, name)
    if not path.is_file():
        raise FileNotFoundError(f"image file {name!r} not found in the input folder")
    return path


def _check_input_file(image: str) -> str | None:
    try:
        input_file(image)
    except (folders.UnsafePath, FileNotFoundError) as exc:
        return f"Invalid image file: {exc}"
    return None


def _sha256(image: str) -> str:
    digest = hashlib.sha256()
    with open(input_file(image), "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LoadImage(Node):
    """Loads an image from the input folder; its mask is 1 - alpha."""

    inputs = (Combo("image", choices=input_images, image_upload=True),)
    outputs = (Output("IMAGE"), Output("MASK"))
    category = "image"
    display_name = "Load Image"

    @classmethod
    def fingerprint(cls, image: str, **_) -> str:
        return _sha256(image)  # re-run when the file's content changes, not only its name

    @classmethod
    def check(cls, image: str, **_) -> str | None:
        return _check_input_file(image)

    def run(self, image: str):
        return imaging.load_image(input_file(image))


class LoadImageMask(Node):
    """Loads one channel of an image from the input folder as a mask (alpha inverted)."""

    inputs = (Combo("image", choices=input_images, image_upload=True),
              Combo("channel", choices=imaging.MASK_CHANNELS))
    outputs = (Output("MASK"),)
    category = "mask"
    display_name = "Load Image (as Mask)"

    @classmethod
    def fingerprint(cls, image: str, **_) -> str:
        return _sha256(image)

    @classmethod
    def check(cls, image: str, **_) -> str | None:
        return _check_input_file(image)

    def run(self, image: str, channel: str):
        return (imaging.load_mask(input_file(image), channel),)


def _file_hash(kind: str, name: str, hash_kind: str = file_hashes.SHA256) -> str | None:
    """A1111's short hash of a model file for the infotext, hashed now if the background hasher hasn't yet."""
    try:
        return file_hashes.current().wait_for(folders.current().find(kind, name), hash_kind)
    except (OSError, ValueError):
        return None  # a model we can't find still gets the rest of the infotext


def _model_hash(ckpt_name: str) -> str | None:
    return _file_hash("checkpoints", ckpt_name)


def _vae_hash(vae_name: str) -> str | None:
    return _file_hash("vae", vae_name)


def _lora_hash(lora_name: str) -> str | None:
    """A1111's LoRA hash, which differs from its model hash (file_hashes.ADDNET)."""
    return _file_hash("loras", lora_name, file_hashes.ADDNET)


def _ti_hash(name: str) -> str | None:
    """A1111's TI hash: the short sha256 of the embedding file a prompt's `embedding:NAME` loads."""
    from ..runtime import embeddings

    try:
        path = embeddings.find_file(name)
        return file_hashes.current().wait_for(path) if path is not None else None
    except (OSError, ValueError):
        return None


class SaveImage(Node):
    """Saves the input images to the output folder, with the workflow and A1111 parameters embedded."""

    inputs = (Input("images", "IMAGE", tooltip="The images to save."),
              String("filename_prefix", default="ComfyUI",
                     tooltip="The prefix for the file to save. This may include formatting information such "
                             "as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."))
    outputs = ()
    category = "image"
    display_name = "Save Image"
    description = "Saves the input images to your output directory."
    output_node = True

    kind = "output"
    compress_level = 4
    durable = True

    def folder(self) -> Path:
        return folders.current().output_dir

    def run(self, images, filename_prefix: str = "ComfyUI"):
        results = []
        for index, pil in enumerate(imaging.tensor_to_pils(images)):
            parameters = None
            if self.ctx.prompt:
                parameters = png_metadata.infotext_from_workflow(
                    self.ctx.prompt, self.ctx.node_id, size=pil.size, batch_index=index, model_hash=_model_hash,
                    vae_hash=_vae_hash, lora_hash=_lora_hash, ti_hash=_ti_hash)
            metadata = png_metadata.png_text(self.ctx.prompt or None, self.ctx.extra_pnginfo, parameters)
            saved = image_files.save_png(pil, self.folder(), filename_prefix, metadata, batch_number=index,
                                         compress_level=self.compress_level, durable=self.durable)
            results.append({"filename": saved.filename, "subfolder": saved.subfolder, "type": self.kind})
        return Result((), {"images": results})


class PreviewImage(SaveImage):
    """Saves the input images to the temp folder, for showing in the UI."""

    inputs = (Input("images", "IMAGE"),)
    display_name = "Preview Image"
    description = "Saves the input images to your temp directory."

    kind = "temp"
    compress_level = 1
    durable = False

    def folder(self) -> Path:
        return folders.current().temp_dir

    def run(self, images, filename_prefix: str = "ComfyUI"):
        # A random suffix, as ComfyUI's, so previews of separate runs don't share a counter sequence.
        suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
        return super().run(images, f"{filename_prefix}_temp_{suffix}")


class ImageScale(Node):
    """Resizes images; a width or height of 0 keeps the aspect ratio."""

    inputs = (Input("image", "IMAGE"),
              Combo("upscale_method", choices=imaging.UPSCALE_METHODS),
              Int("width", default=512, min=0, max=16384, step=1),
              Int("height", default=512, min=0, max=16384, step=1),
              Combo("crop", choices=imaging.CROP_METHODS))
    outputs = (Output("IMAGE"),)
    category = "image/upscaling"
    display_name = "Upscale Image"

    @classmethod
    def output_pixels(cls, image, width: int, height: int, **_) -> int:
        batch, old_height, old_width = image.shape[:3]
        if not width and not height:
            width, height = old_width, old_height
        elif not width:
            width = round(old_width * height / max(old_height, 1))
        elif not height:
            height = round(old_height * width / max(old_width, 1))
        return batch * width * height

    def run(self, image, upscale_method: str, width: int, height: int, crop: str):
        return (imaging.scale_image(image, width, height, upscale_method, crop, self.ctx.check_interrupt),)


class ImageScaleBy(Node):
    """Resizes images by a factor."""

    inputs = (Input("image", "IMAGE"), Combo("upscale_method", choices=imaging.UPSCALE_METHODS),
              Float("scale_by", default=1.0, min=0.01, max=8.0, step=0.01))
    outputs = (Output("IMAGE"),)
    category = "image/upscaling"
    display_name = "Upscale Image By"

    @classmethod
    def output_pixels(cls, image, scale_by: float, **_) -> int:
        height, width = (max(1, round(side * scale_by)) for side in image.shape[1:3])
        return image.shape[0] * width * height

    def run(self, image, upscale_method: str, scale_by: float):
        height, width = (max(1, round(side * scale_by)) for side in image.shape[1:3])
        return (imaging.scale_image(image, width, height, upscale_method,
                                    check_interrupt=self.ctx.check_interrupt),)


NODES = {
    "LoadImage": LoadImage,
    "LoadImageMask": LoadImageMask,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
}
