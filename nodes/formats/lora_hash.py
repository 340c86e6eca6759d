"""A LoRA file's metadata (GET /sdapi/v1/loras), read from the file without loading it. Its A1111 hash
("Lora hashes") is file_hashes' ADDNET kind."""
from __future__ import annotations

import json
from pathlib import Path


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
