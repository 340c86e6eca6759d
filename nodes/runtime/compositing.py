"""Pasting, blending, cropping and batching IMAGE and LATENT tensors, as ComfyUI's core nodes do.

IMAGE is [B,H,W,C] in 0..1 (C is 3, or 4 with alpha), LATENT samples [B,C,h,w], MASK [B,H,W] (a
single [H,W] mask is accepted everywhere). Sizes and offsets of latents are given in pixels and
divided by 8, as in ComfyUI's widgets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .images import center_crop

LATENT_SCALE = 8
BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (or cut) along dim 0 to `batch` entries (ComfyUI's repeat_to_batch_size)."""
    if tensor.shape[0] == batch:
        return tensor
    return tensor[torch.arange(batch) % tensor.shape[0]]


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """Any MASK ([H,W], [B,H,W], [B,1,H,W]) as [B,H,W]."""
    return mask.reshape(-1, *mask.shape[-2:])


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 1, resize_source: bool = False) -> torch.Tensor:
    """ComfyUI's masked composite on channel-first tensors [B,C,H,W]: `source` pasted onto a copy of
    `destination` with its top-left corner at (x, y) // multiplier, weighted by `mask` (1 = source;
    resized to the source's size); the part outside the destination is dropped. The source and mask
    batches repeat to the destination's."""
    destination = destination.clone()
    source = source.to(destination.device, destination.dtype)
    if resize_source:
        source = F.interpolate(source, size=destination.shape[-2:], mode="bilinear")
    source = to_batch(source, destination.shape[0])
    x = max(-source.shape[-1] * multiplier, min(x, destination.shape[-1] * multiplier))
    y = max(-source.shape[-2] * multiplier, min(y, destination.shape[-2] * multiplier))
    left, top = x // multiplier, y // multiplier
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = as_mask_batch(mask).to(destination.device, destination.dtype)[:, None]
        mask = F.interpolate(mask, size=source.shape[-2:], mode="bilinear")
        mask = to_batch(mask, source.shape[0])
    # the source's own pixels left or above the destination are cut first
    src_left, src_top = max(0, -left), max(0, -top)
    left, top = max(0, left), max(0, top)
    width = min(source.shape[-1] - src_left, destination.shape[-1] - left)
    height = min(source.shape[-2] - src_top, destination.shape[-2] - top)
    if width <= 0 or height <= 0:
        return destination
    window = (..., slice(src_top, src_top + height), slice(src_left, src_left + width))
    mask, source = mask[window], source[window]
    target = (..., slice(top, top + height), slice(left, left + width))
    destination[target] = mask * source + (1 - mask) * destination[target]
    return destination


def alpha_fix(image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give an RGB image an opaque alpha channel when the other one has alpha (ComfyUI's image_alpha_fix)."""
    if image1.shape[-1] < image2.shape[-1]:
        image1 = F.pad(image1, (0, image2.shape[-1] - image1.shape[-1]), value=1.0)
    elif image2.shape[-1] < image1.shape[-1]:
        image2 = F.pad(image2, (0, image1.shape[-1] - image2.shape[-1]), value=1.0)
    return image1, image2


def composite_images(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, resize_source: bool,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """ImageCompositeMasked: pixel offsets, IMAGE tensors."""
    destination, source = alpha_fix(destination, source)
    out = composite(destination.movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
    return out.movedim(1, -1)


def resize_images(images: torch.Tensor, width: int, height: int, method: str = "bicubic",
                  crop: str = "center") -> torch.Tensor:
    """IMAGE [B,H,W,C] to width x height, center-cropped to that aspect ratio first (ComfyUI's
    common_upscale with crop "center"); bicubic overshoot is clamped."""
    samples = images.movedim(-1, 1)
    if crop == "center":
        samples = center_crop(samples, width / height)
    out = F.interpolate(samples, size=(height, width), mode=method)
    return out.clamp(0, 1).movedim(1, -1) if method == "bicubic" else out.movedim(1, -1)


def blend_images(image1: torch.Tensor, image2: torch.Tensor, blend_factor: float, blend_mode: str) -> torch.Tensor:
    """ImageBlend: image1 mixed with blend_mode(image1, image2) by blend_factor, clamped to 0..1;
    image2 is resized (bicubic, center crop) to image1's size when they differ."""
    if blend_mode not in BLEND_MODES:
        raise ValueError(f"blend_mode must be one of {', '.join(BLEND_MODES)}, got {blend_mode!r}")
    image1, image2 = alpha_fix(image1, image2)
    image2 = image2.to(image1.device, image1.dtype)
    if image1.shape[1:] != image2.shape[1:]:
        image2 = resize_images(image2, image1.shape[2], image1.shape[1])
    image2 = to_batch(image2, image1.shape[0])
    blended = _blend_mode(image1, image2, blend_mode)
    return (image1 * (1 - blend_factor) + blended * blend_factor).clamp(0, 1)


def _blend_mode(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    return a - b  # difference


def batch_images(image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
    """ImageBatch: image2's images after image1's; an RGB batch gets an opaque alpha when the other has
    one, and image2 is resized (bilinear, center crop) to image1's size."""
    image1, image2 = alpha_fix(image1, image2)
    if image1.shape[1:] != image2.shape[1:]:
        image2 = resize_images(image2, image1.shape[2], image1.shape[1], "bilinear")
    return torch.cat((image1, image2.to(image1.device, image1.dtype)))


def crop_image(image: torch.Tensor, width: int, height: int, x: int, y: int) -> torch.Tensor:
    """ImageCrop: width x height from (x, y), with x and y kept inside the image (the crop may come out
    smaller at the right and bottom edges)."""
    x = min(x, image.shape[2] - 1)
    y = min(y, image.shape[1] - 1)
    return image[:, y:y + height, x:x + width, :]


def invert_image(image: torch.Tensor) -> torch.Tensor:
    """ImageInvert: 1 - colour; an alpha channel (transparency, not colour) is kept."""
    out = 1.0 - image
    if image.shape[-1] == 4:
        out[..., 3] = image[..., 3]
    return out


def pad_for_outpaint(image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ImagePadForOutpaint: the image on a grey (0.5) canvas grown by the given pixels, and a mask that
    is 1 on the new border. With feathering, the mask also rises inside the image towards each padded
    side, quadratically over `feathering` pixels, so the outpainted part blends in."""
    batch, height, width, channels = image.shape
    canvas = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5, dtype=torch.float32)
    canvas[:, top:top + height, left:left + width, :] = image
    mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
    inner = torch.zeros((height, width), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
        cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
        far_h, far_w = torch.full_like(rows, height), torch.full_like(cols, width)
        distance = torch.stack([rows if top else far_h, (height - rows) if bottom else far_h,
                                cols if left else far_w, (width - cols) if right else far_w]).amin(0)
        ramp = ((feathering - distance) / feathering).clamp_min(0)
        inner = torch.where(distance < feathering, ramp * ramp, inner)
    mask[top:top + height, left:left + width] = inner
    return canvas, mask[None]
