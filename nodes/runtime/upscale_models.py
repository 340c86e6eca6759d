"""Image upscale models (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ...) through spandrel, run in tiles.

spandrel recognises the architecture from a state dict's keys and shapes and builds the network; the
file is read by `state_dict_files.open_state_dict`, so a pickle goes through `torch.load(weights_only=True)`
only. The image is upscaled in overlapping tiles whose overlaps are blended with linear ramps: memory
grows with the tile, not the image, so a 4x upscale of 1024x1024 needs only the output image and one
tile's activations at a time. A GPU out of memory halves the tile and tries again.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Callable

import torch

from . import memory_manager, model_cache
from .state_dict_files import CheckpointError, open_state_dict

TILE = 512
OVERLAP = 32
MIN_TILE = 64
# SwinIR checkpoints saved from a DataParallel model carry this prefix (ComfyUI strips it too)
_DATA_PARALLEL_KEY = "module.layers.0.residual_group.blocks.0.norm1.weight"
_run_lock = threading.Lock()  # one upscale at a time moves a shared model to the device


class UpscaleModelError(ValueError):
    """A file that is not an upscale model Inkwash can run; the message names the file."""


def load(path: str | Path):
    """The spandrel ImageModelDescriptor for a file, on the CPU in eval mode, shared through the model cache."""
    return model_cache.shared().get_or_load(path, lambda: _load(Path(path)), variant="upscale_model")


def _load(path: Path):
    import spandrel

    try:
        state = open_state_dict(path)
        tensors = {key: state[key] for key in state}
    except CheckpointError as err:
        raise UpscaleModelError(f"upscale model {err}") from err
    if _DATA_PARALLEL_KEY in tensors:
        tensors = {key.removeprefix("module."): value for key, value in tensors.items()}
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(tensors)
    except spandrel.UnsupportedModelError as err:
        raise UpscaleModelError(f"{path.name}: not an upscale model architecture spandrel knows "
                                "(ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ...)") from err
    except (KeyError, RuntimeError, ValueError, IndexError) as err:  # recognised keys, unusable shapes
        raise UpscaleModelError(f"{path.name}: the weights don't fit the {type(err).__name__} architecture "
                                f"they look like: {err}") from err
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(f"{path.name}: a {descriptor.architecture.name} model, which needs a mask or "
                                "more than one image; only single-image upscale models can be used here")
    return descriptor.eval()


def upscale(model, image: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP,
            on_tile: Callable[[int, int], None] | None = None,
            check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """IMAGE [B,H,W,C] in 0..1 upscaled by the model's scale, in tiles of `tile` pixels overlapping by
    `overlap`; `check_interrupt()` (it raises to stop) before each tile, `on_tile(done, total)` after it.
    A CUDA out-of-memory halves the tile (down to MIN_TILE) and starts again."""
    device = memory_manager.compute_device()
    dtype = torch.float16 if device.type == "cuda" and model.supports_half else torch.float32
    with _run_lock:
        # room for its weights and a tile's activations (small models, moved here and back by this module)
        activation = 3 * tile * tile * model.scale ** 2 * 64 * torch.finfo(dtype).bits // 8
        memory_manager.free_memory(model_cache.weight_bytes(getattr(model, "model", model)) + activation)
        model.to(device=device, dtype=dtype)
        try:
            while True:
                try:
                    with torch.inference_mode():
                        return _tiled(model, image, tile, overlap, device, dtype, on_tile, check_interrupt)
                except torch.cuda.OutOfMemoryError:
                    if tile // 2 < MIN_TILE:
                        raise
                    tile //= 2
                    torch.cuda.empty_cache()
        finally:
            model.to(device="cpu", dtype=torch.float32)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles start along one side: as few as cover it with each overlapping the next by at least
    `overlap`, spread evenly from one edge to the other."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [i * (size - tile) // (count - 1) for i in range(count)]


def _ramp(length: int, fade_start: bool, fade_end: bool, width: int) -> torch.Tensor:
    """Blend weights along one side of a tile: rising over `width` where it overlaps its neighbour
    before, falling where it overlaps the one after, 1 elsewhere (never 0, so every pixel counts)."""
    weights = torch.ones(length)
    steps = torch.arange(1, width + 1, dtype=torch.float32) / (width + 1)
    if fade_start and width:
        weights[:width] = steps
    if fade_end and width:
        weights[length - width:] = torch.minimum(weights[length - width:], steps.flip(0))
    return weights


def _tiled(model, image: torch.Tensor, tile: int, overlap: int, device, dtype, on_tile,
           check_interrupt) -> torch.Tensor:
    scale = model.scale
    batch, height, width, _ = image.shape
    pixels = image.movedim(-1, 1)[:, :model.input_channels]
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    out = torch.zeros(batch, model.output_channels, height * scale, width * scale)
    weight = torch.zeros(1, 1, height * scale, width * scale)
    total, done = len(ys) * len(xs), 0
    for y in ys:
        for x in xs:
            if check_interrupt is not None:
                check_interrupt()
            piece = pixels[:, :, y:y + tile, x:x + tile].to(device, dtype)
            result = model(piece).float().cpu()
            h, w = result.shape[-2:]
            # fade only the sides that overlap a neighbour, over the overlap actually shared
            fade_y = _ramp(h, y > 0, y + tile < height, overlap * scale)
            fade_x = _ramp(w, x > 0, x + tile < width, overlap * scale)
            mask = fade_y[:, None] * fade_x[None, :]
            top, left = y * scale, x * scale
            out[:, :, top:top + h, left:left + w] += result * mask
            weight[:, :, top:top + h, left:left + w] += mask
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return out.div_(weight).clamp_(0, 1).movedim(1, -1).to(image.dtype)  # in place: the output is the big one
