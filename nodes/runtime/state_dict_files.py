"""Reading and writing weight files without surprises.

`.safetensors` files are opened lazily: their header gives every key and shape, and a tensor is read
only when asked for, so detection costs nothing and loading holds one copy of the weights. Tensors
are read into memory of their own rather than mapped from the file (safetensors' `get_tensor` maps
it): a file rewritten or truncated on disk while its model is in use can then neither change the
weights nor crash the process, and every tensor is allocator-aligned, so results do not depend on
where a tensor happened to sit in the file. Pickles (`.ckpt`, `.pt`, `.pth`, `.bin`) go through
`torch.load(weights_only=True)` only, which refuses files that carry Python objects (the
code-execution risk of pickles).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100_000_000


class CheckpointError(ValueError):
    """A model file that cannot be used; the message names the file and what is wrong."""


class StateDict(Mapping):
    """Read-only `{key: tensor}` over a file. Tensors are read on access, each into memory of its own,
    floating-point ones cast to `dtype` when it is set (`read(key, dtype)` does both)."""

    def __init__(self, path: Path, shapes: dict[str, tuple], read, metadata: dict[str, str]):
        self.path = path
        self.shapes = shapes
        self.metadata = metadata
        self.dtype: torch.dtype | None = None
        self._read = read

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.shapes:
            raise KeyError(key)
        return self._read(key, self.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def __contains__(self, key) -> bool:
        return key in self.shapes

    def subset(self, prefix: str = "", keys=None) -> "StateDict":
        """The keys that start with `prefix` (and are in `keys`, if given), names unchanged, sharing
        this file's reader."""
        shapes = {k: s for k, s in self.shapes.items() if k.startswith(prefix) and (keys is None or k in keys)}
        view = StateDict(self.path, shapes, self._read, self.metadata)
        view.dtype = self.dtype
        return view


def open_state_dict(path: str | Path) -> StateDict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _open_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _open_pickle(path)
    raise CheckpointError(f"{path.name}: unsupported file type {suffix!r} "
                          f"(expected {', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)})")


def _open_safetensors(path: Path) -> StateDict:
    """Parse and check the header (8-byte length, JSON of dtype / shape / data offsets); tensors are
    read later, each into a fresh tensor."""
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path.name}: not a readable .safetensors file (truncated or corrupt?): {why}")

    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if size < 8 or length > min(size - 8, _MAX_HEADER):
            raise corrupt("bad header length")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise corrupt(f"header is not JSON ({err})") from err
        except RecursionError:
            raise corrupt("header is not a tensor table (JSON nested too deeply)") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    entries: dict[str, tuple[torch.dtype, tuple, int, int]] = {}
    for key, info in header.items():
        try:
            dtype, shape = _SAFETENSORS_DTYPES[info["dtype"]], tuple(int(n) for n in info["shape"])
            start, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise corrupt(f"bad entry for {key!r}") from err
        if end - start != math.prod(shape) * dtype.itemsize or not 0 <= start <= end <= size - 8 - length:
            raise corrupt(f"data of {key!r} lies outside the file")
        entries[key] = (dtype, shape, 8 + length + start, end - start)
    handle = open(path, "rb")  # closed when the StateDict is dropped
    # bytes of tensors that get cast land here first; reusing it spares touching fresh memory twice
    staging = [torch.empty(0, dtype=torch.uint8)]

    def fill(buffer: torch.Tensor, offset: int, key: str) -> None:
        handle.seek(offset)
        view, done = memoryview(buffer.numpy()), 0
        while done < len(view):
            got = handle.readinto(view[done:])
            if not got:
                raise CheckpointError(f"{path.name}: file ended while reading {key!r} (changed on disk?)")
            done += got

    def read(key: str, target: torch.dtype | None) -> torch.Tensor:
        dtype, shape, offset, nbytes = entries[key]
        if target is None or not dtype.is_floating_point or dtype == target:
            buffer = torch.empty(nbytes, dtype=torch.uint8)
            fill(buffer, offset, key)
            return buffer.view(dtype).reshape(shape)
        if staging[0].numel() < nbytes:
            staging[0] = torch.empty(nbytes, dtype=torch.uint8)
        buffer = staging[0][:nbytes]
        fill(buffer, offset, key)
        return buffer.view(dtype).reshape(shape).to(target)

    return StateDict(path, {k: e[1] for k, e in entries.items()}, read, metadata)


def load_pickled(path: Path, mmap: bool = False):
    """What a .ckpt/.pt/.pth holds, read with torch.load(weights_only=True); CheckpointError naming the
    file when it is corrupt or holds Python objects (refused, never loaded another way)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # torch's own message suggests weights_only=False, which would run the file's code: never say so
        if "unsupported global" in str(err).lower():  # an object weights_only will not build
            raise CheckpointError(
                f"{path.name}: refused: the pickle holds Python objects besides tensors, and loading them "
                "could run arbitrary code. Use a .safetensors version of this model.") from None
        raise CheckpointError(f"{path.name}: not a readable checkpoint (corrupt?): {_unpickler_detail(err)}") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/KeyError... for damaged files
        raise CheckpointError(f"{path.name}: not a readable checkpoint (truncated or corrupt?): "
                              f"{type(err).__name__}: {_first_line(err)}") from None


def _open_pickle(path: Path) -> StateDict:
    # mmap keeps large legacy checkpoints out of RAM until a tensor is read; it needs the zip format
    data = load_pickled(path, mmap=zipfile.is_zipfile(path))
    # the weights may sit one level down: "state_dict" (training checkpoints), "params_ema" / "params"
    # (Real-ESRGAN and other basicsr-trained upscale models; the EMA weights are the ones to use)
    while isinstance(data, dict) and (inner := next(
            (data[k] for k in ("state_dict", "params_ema", "params") if isinstance(data.get(k), dict)), None)):
        data = inner
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)} if isinstance(data, dict) else {}
    if not tensors:
        raise CheckpointError(f"{path.name}: holds no tensors")

    def read(key: str, target: torch.dtype | None) -> torch.Tensor:
        # a copy either way, so weights never alias a file that may be replaced while in use
        tensor = tensors[key]
        if target is not None and tensor.is_floating_point() and tensor.dtype != target:
            return tensor.to(target)
        return tensor.clone()

    return StateDict(path, {k: tuple(v.shape) for k, v in tensors.items()}, read, {})


def _unpickler_detail(err: Exception) -> str:
    """What the unpickler tripped on, without torch's advice to load with weights_only=False."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    detail = lines[0] if lines else type(err).__name__
    return type(err).__name__ if "weights_only" in detail else detail


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Write atomically: a temporary file in the same folder, then os.replace, so a crash or a full
    disk never leaves a half-written model under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
