"""AUTOMATIC1111's image operations around a generation, in PIL (A1111's modules/images.py, masking.py
and processing.py): resize modes, inpainting masks (rounding, inversion, blur), the "only masked" crop
and its paste-back, masked content "fill" and "latent noise", and the overlay of the untouched pixels
written over the saved PNG afterwards.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps
from PIL.PngImagePlugin import PngInfo

from ..nodes.folders import write_atomically
from ..nodes.formats.png_metadata import format_infotext, parse_infotext, read_png_text
from .parameters import MASKED_CONTENT, GenerationParams

# Marks a saved PNG whose pixels were already post-processed, so a cached re-run doesn't do it twice.
POSTPROCESSED_KEY = "inkwash_postprocessed"


# -- the operations --------------------------------------------------------------------------------------

def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGB, transparent parts on `background` (A1111's images.flatten with its default colour)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, background)
        flat.paste(rgba, mask=rgba)
        image = flat
    return image.convert("RGB")


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's images.resize_image with the Lanczos resizer: 0 stretch, 1 cover and centre-crop,
    2 fit and fill the borders with the stretched edge rows/columns."""
    def resize(im: Image.Image, w: int, h: int) -> Image.Image:
        return im.resize((w, h), resample=Image.Resampling.LANCZOS)

    if mode == 0:
        return resize(image, width, height)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
    else:
        src_w = width if ratio < src_ratio else image.width * height // image.height
        src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = resize(image, src_w, src_h)
    result = Image.new(image.mode, (width, height))
    result.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode == 2 and ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            result.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            result.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                         box=(0, fill_height + src_h))
    elif mode == 2 and ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            result.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            result.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                         box=(fill_width + src_w, 0))
    return result


def binary_mask(mask: Image.Image, round_values: bool = True) -> Image.Image:
    """A1111's create_binary_mask: the alpha of a transparent RGBA mask, else its gray; rounded at 128."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        mask = mask.getchannel("A")
    mask = mask.convert("L")
    return mask.point(lambda v: 255 if v > 128 else 0) if round_values else mask


def blur_mask(mask: Image.Image, sigma: int) -> Image.Image:
    """A1111's mask blur: a separable Gaussian with kernel 2 * int(2.5 sigma + 0.5) + 1."""
    if sigma <= 0:
        return mask
    kernel = 2 * int(2.5 * sigma + 0.5) + 1
    array = cv2.GaussianBlur(np.array(mask), (kernel, 1), sigma)
    return Image.fromarray(cv2.GaussianBlur(array, (1, kernel), sigma))


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's masking.fill: the masked area filled with ever less blurred colours of its surroundings."""
    filled = Image.new("RGBA", image.size)
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(blurred)
    return filled.convert("RGB")


def noise_masked(image: Image.Image, mask: Image.Image, seed: int) -> Image.Image:
    """Seeded RGB noise where the mask is set: the pixel-space stand-in for A1111's "latent noise"."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (image.height, image.width, 3), dtype=np.uint8))
    return Image.composite(noise, image, mask.point(lambda v: 255 if v >= 128 else 0))


def crop_region(mask: Image.Image, pad: int) -> tuple[int, int, int, int] | None:
    """A1111's get_crop_region_v2: the mask's bounding box grown by `pad`, or None for a blank mask."""
    box = mask.getbbox()
    if not box:
        return None
    x1, y1, x2, y2 = box
    return (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height))


def expand_crop_region(region: tuple[int, int, int, int], width: int, height: int,
                       image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """A1111's expand_crop_region: grow the crop to the generation's aspect ratio, inside the image."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = _grow_span(y1, y2, int((x2 - x1) / (width / height) - (y2 - y1)), image_height)
    else:
        x1, x2 = _grow_span(x1, x2, int((y2 - y1) * (width / height) - (x2 - x1)), image_width)
    return x1, y1, x2, y2


def _grow_span(start: int, end: int, diff: int, limit: int) -> tuple[int, int]:
    """[start, end) grown by `diff` around its middle, shifted back inside [0, limit) where it can be."""
    start, end = start - diff // 2, end + diff - diff // 2
    if end >= limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, end - start
    return start, min(end, limit)



# -- inpainting: before and after the run ----------------------------------------------------------------

@dataclass
class InpaintOverlay:
    """What A1111 does to an inpainted image after decoding: paste an "only masked" crop back into the
    whole image, then lay the untouched pixels (the original, transparent where repainted) over it."""

    overlay: Image.Image  # RGBA at the final image size
    paste_box: tuple[int, int, int, int] | None  # x, y, w, h of the "only masked" crop
    infotext: dict[str, Any]  # A1111's extra generation parameters for inpainting

    def apply(self, generated: Image.Image) -> Image.Image:
        image = generated.convert("RGB")
        if self.paste_box is not None:
            x, y, w, h = self.paste_box
            base = Image.new("RGBA", self.overlay.size)
            base.paste(resize_image(1, image, w, h), (x, y))
            image = base
        image = image.convert("RGBA")
        image.alpha_composite(self.overlay)
        return image.convert("RGB")


def inpaint_mask(mask: Image.Image, size: tuple[int, int], params: GenerationParams) -> Image.Image:
    """The mask as A1111 uses it: binary (unless mask_round is off), at the init image's size,
    inverted for "Inpaint not masked", blurred."""
    mask = binary_mask(mask, params.mask_round)
    if mask.size != size:
        mask = mask.resize(size, resample=Image.Resampling.LANCZOS)
    if params.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return blur_mask(mask, params.mask_blur)


def inpaint_inputs(image: Image.Image, mask: Image.Image, region: tuple[int, int, int, int] | None,
                   params: GenerationParams) -> tuple[Image.Image, Image.Image, InpaintOverlay]:
    """(init image, latent mask, what to do after the run) for inpainting the flattened `image` with
    `mask` (inpaint_mask) at params.width x params.height: the whole picture in the resize mode, or
    the "only masked" `region` (crop_region) grown to the generation's aspect ratio."""
    width, height = params.width, params.height
    extra: dict[str, Any] = {"Mask blur": params.mask_blur or None}
    if params.inpainting_mask_invert:
        extra["Mask mode"] = "Inpaint not masked"

    paste_box = None
    if region is not None:
        region = expand_crop_region(region, width, height, mask.width, mask.height)
        x1, y1, x2, y2 = region
        paste_box = (x1, y1, x2 - x1, y2 - y1)
        overlay_mask = mask
        latent_mask = resize_image(2, mask.crop(region), width, height)
        extra.update({"Inpaint area": "Only masked", "Masked area padding": params.inpaint_full_res_padding})
    else:  # whole picture
        image = resize_image(params.resize_mode, image, width, height)
        latent_mask = resize_image(params.resize_mode, mask, width, height)
        overlay_mask = Image.fromarray(np.clip(np.asarray(latent_mask, dtype=np.float32) * 2, 0, 255).astype(np.uint8))
    overlay = image.convert("RGBA")
    overlay.putalpha(ImageOps.invert(overlay_mask.convert("L")))
    if region is not None:
        image = resize_image(2, image.crop(region), width, height)
    if params.inpainting_fill != 1:
        image = fill_masked(image, latent_mask)
        extra["Masked content"] = MASKED_CONTENT[params.inpainting_fill]
    if params.inpainting_fill == 2:
        image = noise_masked(image, latent_mask, params.seed)
    return image, latent_mask.convert("L"), InpaintOverlay(overlay, paste_box, extra)


def add_infotext_params(infotext: str | None, extra: dict[str, Any]) -> str | None:
    """Insert A1111 parameters before "Version" (where A1111 writes its extra parameters)."""
    extra = {k: v for k, v in extra.items() if v is not None}
    if not infotext or not extra:
        return infotext
    parsed = parse_infotext(infotext, defaults=False)
    prompt, negative = parsed.pop("Prompt"), parsed.pop("Negative prompt")
    params: dict[str, Any] = {}
    for key, value in parsed.items():
        if key.endswith("-1") and f"{key[:-2]}-2" in parsed:
            params[key[:-2]] = f"{value}x{parsed[f'{key[:-2]}-2']}"
        elif not key.endswith("-2") or f"{key[:-2]}-1" not in parsed:
            params[key] = value
    version = params.pop("Version", None)
    params.update(extra)
    params["Version"] = version
    return format_infotext(prompt, negative, params)


def postprocess_saved(path: Path, overlay: InpaintOverlay) -> None:
    """Rewrite a saved inpainting result as A1111 shows it, keeping its text chunks (once only)."""
    texts = read_png_text(path)
    if POSTPROCESSED_KEY in texts:
        return
    with Image.open(path) as saved:
        result = overlay.apply(saved)
    texts["parameters"] = add_infotext_params(texts.get("parameters"), overlay.infotext) or ""
    texts[POSTPROCESSED_KEY] = "inpaint overlay" + (" and paste-back" if overlay.paste_box else "")
    info = PngInfo()
    for key, value in texts.items():
        if value:
            info.add_text(key, value)
    write_png(path, result, info)


def write_png(path: Path, image: Image.Image, info: PngInfo | None = None) -> None:
    """`image` as a PNG at `path` (with `info`'s text chunks), complete or not at all."""
    encoded = io.BytesIO()
    image.save(encoded, format="PNG", pnginfo=info, compress_level=4)
    write_atomically(path, encoded.getvalue())
