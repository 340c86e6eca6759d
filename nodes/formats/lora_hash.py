"""A1111's LoRA hash (the "Lora hashes" infotext) and a LoRA file's metadata (GET /sdapi/v1/loras), read
from the file without loading it."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path


def short_hash(path: str | Path) -> str:
    """The first 12 hex digits of the sha256 of a .safetensors file's tensor data (kohya's "addnet"
    hash, which ignores the header and its metadata), or of a whole pickle; a `sshs_model_hash` in the
    metadata wins, as in A1111."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _hash_cached(str(resolved), stat.st_mtime_ns, stat.st_size)[:12]


@functools.lru_cache(maxsize=64)
def _hash_cached(path: str, mtime_ns: int, size: int) -> str:
    del mtime_ns  # part of the cache key only
    with open(path, "rb") as file:
        start = 0
        if path.lower().endswith(".safetensors"):
            header_length = int.from_bytes(file.read(8), "little")
            if header_length <= size - 8:
                try:
                    header = json.loads(file.read(header_length))
                    recorded = (header.get("__metadata__") or {}).get("sshs_model_hash")
                    if recorded:
                        return str(recorded)
                except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                    pass
                start = 8 + header_length
        file.seek(start)
        digest = hashlib.sha256()
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata(path: str | Path) -> dict:
    """The `__metadata__` of a .safetensors file's header (kohya's ss_* training notes), {} for other
    files or a header that can't be read."""
    if not str(path).lower().endswith(".safetensors"):
        return {}
    try:
        with open(path, "rb") as file:
            header_length = int.from_bytes(file.read(8), "little")
            if header_length > Path(path).stat().st_size - 8:
                return {}
            found = json.loads(file.read(header_length)).get("__metadata__") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}
