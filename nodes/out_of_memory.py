"""A node that runs out of device memory fails with an error that says which node, at what sizes, and
what to try. Imports no torch (the executor's rule): errors are recognised by name, sizes by shape.
"""
from __future__ import annotations

from typing import Any, Mapping


class OutOfDeviceMemory(MemoryError):
    """A node ran out of device memory; the message names the node, the sizes and what to try."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (and CUDA's subclass), or the RuntimeError MPS and older builds raise."""
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def describe(exc: BaseException, node_id: str, class_type: str, inputs: Mapping[str, Any]) -> OutOfDeviceMemory:
    sizes = job_sizes(inputs)
    at = f" for {sizes}" if sizes else ""
    tips = ["a smaller batch or image size", "`--vram low` (models stream through the device in parts)"]
    if "VAE" in class_type or "vae" in inputs:
        tips.insert(0, "VAE Decode (Tiled) / VAE Encode (Tiled) with a smaller tile_size")
    else:
        tips.append("a tiled VAE decode for large images")
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OutOfDeviceMemory(f"{class_type} (node {node_id}) ran out of device memory{at}. Try "
                             f"{', '.join(tips[:-1])} or {tips[-1]}. ({detail})")


def job_sizes(inputs: Mapping[str, Any]) -> str:
    """"batch 4, 1024x768" from the node's inputs: a LATENT's samples [B,C,h,w], an IMAGE [B,H,W,C], or
    width / height / batch_size widgets; "" when none of them is there."""
    for value in inputs.values():
        samples = value.get("samples") if isinstance(value, dict) else None
        shape = getattr(samples, "shape", None)
        if shape is not None and len(shape) == 4:
            return f"batch {shape[0]}, {shape[3] * 8}x{shape[2] * 8}"
    for value in inputs.values():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) == 4 and shape[-1] in (1, 3, 4):
            return f"batch {shape[0]}, {shape[2]}x{shape[1]}"
    width, height = inputs.get("width"), inputs.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return f"batch {inputs.get('batch_size', 1)}, {width}x{height}"
    return ""


def release_device_memory() -> None:
    """After the failed node's tensors are dropped: give the device allocator's cache back, so the next
    job starts with the memory free (torch is loaded: it raised the error)."""
    from .runtime.devices import free_cached_memory

    free_cached_memory()
