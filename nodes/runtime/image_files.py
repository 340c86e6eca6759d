"""Saving PNGs into an output folder: ComfyUI's file names, atomic writes, no way out of the folder. No torch.

A file is written under a hidden temporary name in its final folder, then renamed into place, so a
reader (the gallery, a sync tool) never sees a half-written image, and a crash leaves no partial file.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..folders import UnsafePath, safe_path

# Choosing the counter and renaming into place happen under this lock, so two saves in this process
# never take the same name.
_name_lock = threading.Lock()


@dataclass(frozen=True)
class SavedImage:
    filename: str
    subfolder: str  # relative to the folder, "/"-separated, "" for the folder itself
    path: Path


def expand_prefix(prefix: str, width: int, height: int, batch_number: int = 0) -> str:
    """ComfyUI's filename_prefix variables: %width% %height% %batch_num% %year% %month% %day% %hour%
    %minute% %second%."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": width, "height": height, "batch_num": batch_number, "year": now.tm_year,
              "month": f"{now.tm_mon:02}", "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}",
              "minute": f"{now.tm_min:02}", "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


def resolve_prefix(folder: str | Path, filename_prefix: str) -> tuple[Path, str, str]:
    """(directory, subfolder, name) for a prefix like "portraits/ComfyUI"; refuses any prefix that would
    leave `folder`: absolute, `..`, or through a symlink pointing outside."""
    if not isinstance(filename_prefix, str) or not filename_prefix.strip() or "\x00" in filename_prefix:
        raise UnsafePath(f"invalid filename prefix {filename_prefix!r}")
    normalized = os.path.normpath(filename_prefix)
    if os.path.isabs(filename_prefix) or ".." in Path(normalized).parts:
        raise UnsafePath(f"filename prefix {filename_prefix!r} leaves the output folder")
    subfolder, name = os.path.split(normalized)
    if name in ("", "."):
        raise UnsafePath(f"filename prefix {filename_prefix!r} has no file name")
    directory = safe_path(Path(folder), subfolder) if subfolder else Path(folder).resolve()
    return directory, Path(subfolder).as_posix() if subfolder else "", name


def next_counter(directory: Path, name: str) -> int:
    """One more than the highest N among files `{name}_N...` in `directory` (ComfyUI's scan), or 1."""
    highest = 0
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return 1
    wanted = os.path.normcase(name)
    for entry in entries:
        if os.path.normcase(entry[:len(name)]) != wanted or entry[len(name):len(name) + 1] != "_":
            continue
        try:
            highest = max(highest, int(entry[len(name) + 1:].split("_")[0]))
        except ValueError:
            continue
    return highest + 1


def save_png(image: Image.Image, folder: str | Path, filename_prefix: str, metadata: dict[str, str] | None = None,
             *, batch_number: int = 0, compress_level: int = 4, durable: bool = True) -> SavedImage:
    """Save `image` as `{prefix}_{counter:05}_.png` inside `folder`, with `metadata` as PNG text chunks.

    `durable` flushes the file to disk before it appears under its name (worth it for outputs, not
    for previews)."""
    prefix = expand_prefix(filename_prefix, image.width, image.height, batch_number)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(key, value)
    return _save(lambda file: image.save(file, format="PNG", pnginfo=info, compress_level=compress_level),
                 folder, prefix, ".png", durable)


def save_file(data: bytes, folder: str | Path, filename_prefix: str, extension: str = ".png", *,
              durable: bool = True) -> SavedImage:
    """Save `data` as `{prefix}_{counter:05}_{extension}` inside `folder`: a file another process made
    (a remote worker's image), named as this folder's own saves are."""
    return _save(lambda file: file.write(data), folder, filename_prefix, extension, durable)


def _save(write, folder: str | Path, prefix: str, extension: str, durable: bool) -> SavedImage:
    directory, subfolder, name = resolve_prefix(folder, prefix)
    directory.mkdir(parents=True, exist_ok=True)
    directory = safe_path(Path(folder), subfolder) if subfolder else directory  # re-check once it exists
    temp = directory / f".{secrets.token_hex(8)}{extension}.tmp"
    try:
        # os.open with 0o666 so the final file gets the usual permissions (mkstemp would give 0o600).
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as file:
            write(file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        with _name_lock:
            filename = f"{name}_{next_counter(directory, name):05}_{extension}"
            os.replace(temp, directory / filename)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return SavedImage(filename, subfolder, directory / filename)
