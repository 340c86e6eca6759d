"""Reads a picture of the demo world back into words, by pixel analysis against the world's own
definitions (named colours, position centres, shape outlines). It is how the evaluation decides
whether a generated image shows what its prompt asked for.

It expects one object on a plain background, and is built for blurry, noisy generated images:
    background  the most common named colour along the border
    object      the largest blob of pixels closer to the object's colour than to the background's
    colour      the named colour nearest to the median of the blob's most contrasting pixels
    shape       the world shape that, drawn with the object's centroid and area and blurred as
                much as the image is, differs least from it
    position    the position centre nearest to the object's centroid
    size        the world size whose area is nearest to the object's, by ratio
Images of any size are judged after resizing to 128x128.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from . import world

SIZE = 128          # images are judged at the world's own resolution
BORDER = 0.05       # width of the border band that decides the background, as a canvas fraction
MIN_CONTRAST = 45   # RGB distance from the background that starts an object (colours are >=100 apart)
MIN_AREA = 12       # pixels; a smaller blob is noise, not an object
NEAR = 8            # pixels around the blob that still count as the object's (blurred) rim
BLURS = (0, 1, 2, 3)  # Gaussian sigmas, in pixels, the shape templates are compared at

_NAMES = tuple(world.COLOURS)
_PALETTE = np.array([world.COLOURS[n] for n in _NAMES], np.float32)


def _nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """Index into _NAMES of the nearest named colour, for every RGB row of rgb [..., 3]."""
    return np.argmin(((rgb[..., None, :] - _PALETTE) ** 2).sum(-1), axis=-1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask. Each pixel takes the smallest label among
    itself and its neighbours, then follows its label to that pixel's label (pointer jumping), until
    nothing changes."""
    h, w = mask.shape
    none = h * w  # label of pixels outside the mask: larger than any pixel index
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        smallest = np.minimum.reduce([labels, padded[:-2, 1:-1], padded[2:, 1:-1],
                                      padded[1:-1, :-2], padded[1:-1, 2:]])
        smallest = np.where(mask, smallest, none)
        flat = np.append(smallest.ravel(), none)
        smallest = np.where(mask, flat[smallest], none)
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    counts = np.bincount(labels[mask], minlength=h * w)
    return mask & (labels == counts.argmax()) if counts.any() else mask


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        padded = np.pad(mask, 1)
        mask = mask | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return mask


def _to_world_size(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    image = image[..., :3].astype(np.uint8)
    if image.shape[:2] != (SIZE, SIZE):
        image = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR))
    return image.astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D float image."""
    if sigma <= 0:
        return image
    r = int(np.ceil(3 * sigma))
    kernel = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    for axis in (0, 1):
        padded = np.pad(image, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        image = sum(k * np.take(padded, range(i, i + image.shape[axis]), axis=axis)
                    for i, k in enumerate(kernel))
    return image


def _best_shape(alpha: np.ndarray, window: tuple[slice, slice], centre: tuple[float, float]) -> str:
    """The world shape that, drawn at the object's centroid with the object's area and blurred as
    much as the picture is, is nearest to it (least squared difference over the window around it).
    Trying several blurs keeps a blurry star from looking most like a sharp circle; all world
    shapes have their centroid at their centre, so the centroid places them."""
    area = alpha.sum()
    best, best_error = world.SHAPES[0], np.inf
    for shape in world.SHAPES:
        template = world.shape_mask(shape, centre, np.sqrt(area / _area_factor(shape)), SIZE)[window]
        for sigma in BLURS:
            error = ((_blur(template, sigma) - alpha[window]) ** 2).sum()
            if error < best_error:
                best, best_error = shape, error
    return best


@functools.lru_cache(maxsize=None)
def _area_factor(shape: str) -> float:
    """A shape's area in pixels divided by its radius squared (radius as a canvas fraction)."""
    return float(world.shape_mask(shape, (0.5, 0.5), 0.25, SIZE).sum()) / 0.25 ** 2


def _size(shape: str, area: float) -> str:
    """The size whose drawn area is nearest to area, by ratio."""
    return min(world.SIZES,
               key=lambda s: abs(np.log(area / (_area_factor(shape) * world.RADII[s] ** 2))))


def describe(image: np.ndarray) -> dict:
    """What the image shows: {"background", "colour", "shape", "position", "size"} as world names.
    The object's entries are None when no object stands out from the background."""
    pixels = _to_world_size(image)
    band = max(1, round(BORDER * SIZE))
    border = np.concatenate([pixels[:band].reshape(-1, 3), pixels[-band:].reshape(-1, 3),
                             pixels[:, :band].reshape(-1, 3), pixels[:, -band:].reshape(-1, 3)])
    votes = np.bincount(_nearest_colour(border), minlength=len(_NAMES))
    background = int(votes.argmax())
    # The background as it actually is in this image, not as named: generated colours drift.
    bg_rgb = np.median(border[_nearest_colour(border) == background], axis=0)
    seen = {"background": _NAMES[background], "colour": None, "shape": None, "position": None,
            "size": None}

    contrast = np.linalg.norm(pixels - bg_rgb, axis=-1)
    candidate = _largest_component(contrast > MIN_CONTRAST)
    if candidate.sum() < MIN_AREA:
        return seen
    # The core (the most contrasting tenth of the candidate) is the object's own colour even where
    # blur has mixed the background into thin parts, like the arms of a small star.
    core = candidate & (contrast >= np.percentile(contrast[candidate], 90))
    obj_rgb = np.median(pixels[core], axis=0)
    # Split at the midpoint between the two colours: blur moves edges least there.
    nearer = np.linalg.norm(pixels - obj_rgb, axis=-1) < contrast
    blob = _largest_component(nearer)
    if blob.sum() < MIN_AREA:
        return seen

    # Soft membership: how far each pixel near the blob is along the way from background to object
    # colour. Not clipped at 0, so noise averages out of the object's area and centroid.
    direction = (obj_rgb - bg_rgb) / max(float(np.sum((obj_rgb - bg_rgb) ** 2)), 1.0)
    near = _dilate(blob, NEAR)
    alpha = np.zeros((SIZE, SIZE))
    rows, cols = np.nonzero(near)
    window = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    alpha[window] = np.clip((pixels[window] - bg_rgb) @ direction, -0.5, 1.5)
    area = alpha.sum()
    if area < MIN_AREA:
        return seen
    ys, xs = np.mgrid[:SIZE, :SIZE]
    centre = (((xs + 0.5) * alpha).sum() / area / SIZE, ((ys + 0.5) * alpha).sum() / area / SIZE)

    shape = _best_shape(alpha, window, centre)
    position = min(world.POSITIONS, key=lambda p: np.hypot(centre[0] - world.CENTRES[p][0],
                                                           centre[1] - world.CENTRES[p][1]))
    seen.update(colour=_NAMES[int(_nearest_colour(obj_rgb))], shape=shape, position=position,
                size=_size(shape, float(area)))
    return seen


def judge(image: np.ndarray, scene: world.Scene) -> dict[str, bool]:
    """Whether a single-object, plain-background image matches its scene, feature by feature:
    {"background", "colour", "shape", "position"} -> bool."""
    if len(scene.objects) != 1 or scene.background2 is not None:
        raise ValueError("judge() handles single-object scenes on a plain background")
    obj, seen = scene.objects[0], describe(image)
    return {"background": seen["background"] == scene.background,
            "colour": seen["colour"] == obj.colour,
            "shape": seen["shape"] == obj.shape,
            "position": seen["position"] == obj.position}
