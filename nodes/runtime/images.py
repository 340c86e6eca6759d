"""Images between files, PIL and tensors.

IMAGE is a float tensor [B,H,W,C] in 0..1 and MASK is [B,H,W] in 0..1, as in ComfyUI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

# Refuse images above this many pixels (all frames together) before decoding them: a small file can
# claim a huge size, and as float RGB this is already about 800 MB.
MAX_PIXELS = 8192 * 8192

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")
MASK_CHANNELS = ("alpha", "red", "green", "blue")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # how Pillow opens 16-bit grayscale


class ImageLoadError(ValueError):
    """An image file that can't be used; the message names the file."""


# -- PIL <-> tensors -------------------------------------------------------------------------------------

def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as IMAGE [1,H,W,3]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]


def tensor_to_pils(images: torch.Tensor) -> list[Image.Image]:
    """IMAGE [B,H,W,C] (or one [H,W,C]) as 8-bit PIL images; C may be 1, 3 or 4."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an IMAGE [B,H,W,C] with C in 1, 3, 4, got shape {tuple(images.shape)}")
    # Rounding (ComfyUI truncates) makes uint8 -> float -> uint8 exact.
    arrays = (images.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One image of an IMAGE tensor ([H,W,C] or [1,H,W,C]) as PIL."""
    pils = tensor_to_pils(image)
    if len(pils) != 1:
        raise ValueError(f"expected one image, got a batch of {len(pils)}")
    return pils[0]


def mask_to_pil(mask: torch.Tensor) -> Image.Image:
    """One MASK ([H,W] or [1,H,W]) as an 8-bit grayscale PIL image."""
    mask = mask.reshape(mask.shape[-2:]) if mask.ndim == 3 and mask.shape[0] == 1 else mask
    if mask.ndim != 2:
        raise ValueError(f"expected one MASK [H,W], got shape {tuple(mask.shape)}")
    return Image.fromarray((mask.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy())


def pil_to_mask(image: Image.Image, channel: str = "L") -> torch.Tensor:
    """One band of a PIL image ("L", "R", "G", "B" or "A") as MASK [1,H,W]."""
    band = image.convert("L") if channel == "L" else image.getchannel(channel)
    return torch.from_numpy(np.asarray(band, dtype=np.float32) / 255.0)[None]


# -- files -----------------------------------------------------------------------------------------------

def open_image(path: str | Path) -> Image.Image:
    """Open an image file lazily, refusing unreadable files and sizes over MAX_PIXELS before decoding."""
    path = Path(path)
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise ImageLoadError(f"image file {path.name!r} not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image {path.name!r} is too large: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot read image {path.name!r}: not a readable image ({exc})") from None
    width, height = image.size
    frames = getattr(image, "n_frames", 1) if image.format != "MPO" else 1
    if width * height * frames > MAX_PIXELS:
        image.close()
        raise ImageLoadError(f"image {path.name!r} is too large: {width}x{height}"
                             f"{f' x {frames} frames' if frames > 1 else ''} is over {MAX_PIXELS} pixels")
    return image


def _upright(frame: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, so a phone photo loads the way it is shown."""
    try:
        return ImageOps.exif_transpose(frame)
    except Exception:  # broken EXIF shouldn't make a readable image unusable
        return frame


def _rgb(frame: Image.Image) -> np.ndarray:
    """RGB float array in 0..1; 16-bit grayscale keeps its precision."""
    if frame.mode in SIXTEEN_BIT_MODES:
        gray = np.asarray(frame, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=-1)
    return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0


def _alpha(frame: Image.Image) -> np.ndarray | None:
    if "A" in frame.getbands():
        return np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
    if frame.mode == "P" and "transparency" in frame.info:
        return np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    return None


def load_image(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An image file as (IMAGE [B,H,W,3], MASK [B,H,W]) with mask = 1 - alpha (zeros without alpha).

    Every frame of an animation that has the first frame's size becomes one batch entry."""
    path = Path(path)
    with open_image(path) as image:
        images, masks = [], []
        try:
            frames = [image] if image.format == "MPO" else ImageSequence.Iterator(image)
            for frame in frames:
                frame = _upright(frame)
                rgb = _rgb(frame)
                if images and rgb.shape != images[0].shape:
                    continue
                alpha = _alpha(frame)
                images.append(rgb)
                masks.append(1.0 - alpha if alpha is not None else np.zeros(rgb.shape[:2], dtype=np.float32))
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"cannot read image {path.name!r}: file is damaged ({exc})") from None
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def load_mask(path: str | Path, channel: str) -> torch.Tensor:
    """One channel ("alpha", "red", "green", "blue") of an image file as MASK [1,H,W]; alpha is inverted
    (transparent = 1), as ComfyUI's LoadImageMask does; a missing alpha gives zeros."""
    if channel not in MASK_CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(MASK_CHANNELS)}, got {channel!r}")
    path = Path(path)
    with open_image(path) as image:
        try:
            frame = _upright(image)
            if frame.mode in SIXTEEN_BIT_MODES:
                rgb = _rgb(frame)
                frame = Image.fromarray((rgb * 255.0).round().astype(np.uint8))
            has_alpha = "A" in frame.getbands() or (frame.mode == "P" and "transparency" in frame.info)
            frame = frame.convert("RGBA")
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageLoadError(f"cannot read image {path.name!r}: file is damaged ({exc})") from None
    if channel == "alpha":
        if not has_alpha:
            return torch.zeros((1, frame.height, frame.width), dtype=torch.float32)
        return 1.0 - pil_to_mask(frame, "A")
    return pil_to_mask(frame, channel[0].upper())


# -- resizing --------------------------------------------------------------------------------------------

def center_crop(samples: torch.Tensor, aspect: float) -> torch.Tensor:
    """Trim [..., H, W] equally from both sides to the width/height ratio `aspect` (ComfyUI's "center")."""
    old_h, old_w = samples.shape[-2:]
    old_aspect = old_w / old_h
    x = round((old_w - old_w * aspect / old_aspect) / 2) if old_aspect > aspect else 0
    y = round((old_h - old_h * old_aspect / aspect) / 2) if old_aspect < aspect else 0
    return samples[..., y:old_h - y, x:old_w - x]


def per_item(samples: torch.Tensor, resize: Callable[[torch.Tensor], torch.Tensor],
             check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """`resize(samples)` done one batch item at a time with `check_interrupt()` (it raises to stop)
    before each, so a big batch is not one long uninterruptible operation; the same values."""
    if check_interrupt is None:
        return resize(samples)
    out = None
    for index in range(samples.shape[0]):
        check_interrupt()
        item = resize(samples[index:index + 1])
        if out is None:
            out = item.new_empty((samples.shape[0], *item.shape[1:]))
        out[index] = item[0]
    return resize(samples) if out is None else out  # an empty batch


def scale_image(image: torch.Tensor, width: int, height: int, method: str = "nearest-exact",
                crop: str = "disabled", check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """ComfyUI's ImageScale: resize IMAGE [B,H,W,C] to width x height; a 0 keeps the aspect ratio,
    both 0 keep the image; "center" crop trims to the new aspect ratio first. `check_interrupt` is
    called before each image."""
    if method not in UPSCALE_METHODS:
        raise ValueError(f"upscale_method must be one of {', '.join(UPSCALE_METHODS)}, got {method!r}")
    if crop not in CROP_METHODS:
        raise ValueError(f"crop must be one of {', '.join(CROP_METHODS)}, got {crop!r}")
    if width == 0 and height == 0:
        return image
    old_height, old_width = image.shape[1], image.shape[2]
    if width == 0:
        width = max(1, round(old_width * height / old_height))
    elif height == 0:
        height = max(1, round(old_height * width / old_width))
    samples = image.movedim(-1, 1)
    if crop == "center":
        samples = center_crop(samples, width / height)
    if method == "lanczos":
        pils = []
        for pil in tensor_to_pils(samples.movedim(1, -1)):
            if check_interrupt is not None:
                check_interrupt()
            pils.append(pil.resize((width, height), resample=Image.Resampling.LANCZOS))
        out = torch.stack([torch.from_numpy(np.asarray(p, dtype=np.float32) / 255.0) for p in pils])
        if out.ndim == 3:  # single-channel images come back without a channel axis
            out = out[..., None]
        return out.to(image.device, image.dtype)
    out = per_item(samples, lambda batch: torch.nn.functional.interpolate(batch, size=(height, width), mode=method),
                   check_interrupt)
    return out.clamp(0, 1).movedim(1, -1)  # bicubic overshoots 0..1
