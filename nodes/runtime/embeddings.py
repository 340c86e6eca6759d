"""Textual-inversion embeddings from the `embeddings` model folder.

A prompt refers to one as `embedding:NAME` (ComfyUI's syntax; NAME with or without its extension, in
the folder or any subfolder). The tabs and the A1111 API also take bare names, as A1111 does:
`mark_names` rewrites them to `embedding:NAME` first. text_encode puts the embedding's vectors in
place of token embeddings at the positions the reference takes, one position per vector.

Files read:
* A1111 `.pt`: `{"string_to_param": {"*": [n, D]}, "name", "step", ...}` (torch.load, weights_only)
* `.safetensors` with `emb_params` [n, D] (A1111 saves these), or any file holding a single tensor
  (diffusers' learned_embeds.bin: `{"<token>": [D]}`)
* SDXL: `clip_l` [n, 768] and `clip_g` [n, 1280], one set per text encoder
"""
from __future__ import annotations

import logging
import pickle
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch

from .. import folders as folders_module
from ..formats.embedding_names import (  # noqa: F401  (names and marking live torch-free, for the web layer)
    EXTENSIONS,
    KIND,
    REFERENCE,
    list_names,
    mark_names,
)
from ..formats.embedding_names import without_extension as _without_extension
from .model_types import SD1, SD2, SDXL, SDXL_REFINER, Family
from .state_dict_files import SAFETENSORS_SUFFIXES, CheckpointError, open_state_dict

log = logging.getLogger(__name__)

# Which set of an SDXL-style file each text encoder takes, by family (encoders in TextEncoder order).
ENCODER_KEYS = {SD1: ("clip_l",), SD2: ("clip_h",), SDXL: ("clip_l", "clip_g"), SDXL_REFINER: ("clip_g",)}
PAIR_KEYS = ("clip_l", "clip_g")

# `embedding:` then the name up to whitespace; punctuation right after a name is prompt text
_REFERENCE = re.compile(r"(?<!\w)embedding:(\S+)")
_TRAILING_PUNCTUATION = ",.;:!?)]}>\"'"


class EmbeddingError(ValueError):
    """An embedding that cannot be used; the message names it and says what is wrong."""


@dataclass(frozen=True)
class Embedding:
    name: str
    vectors: dict[str, torch.Tensor]  # {"": [n, D]} for any encoder, or {"clip_l": .., "clip_g": ..}
    info: dict = field(default_factory=dict)  # A1111's step / sd_checkpoint / sd_checkpoint_name

    @property
    def count(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def width(self) -> int:
        """Vector width; SDXL files count both sets, as A1111 reports them."""
        return sum(v.shape[-1] for v in self.vectors.values())

    def vectors_for(self, encoder_key: str, width: int) -> torch.Tensor:
        """[n, width] vectors for the text encoder that takes `encoder_key`'s set."""
        if "" in self.vectors:
            vectors = self.vectors[""]
        elif encoder_key in self.vectors:
            vectors = self.vectors[encoder_key]
        else:
            raise EmbeddingError(f"embedding {self.name!r} has vectors for {' and '.join(self.vectors)} only, "
                                 f"not for this model's {encoder_key} text encoder")
        if width is not None and vectors.shape[-1] != width:
            raise EmbeddingError(f"embedding {self.name!r} has {vectors.shape[-1]}-wide vectors, "
                                 f"this CLIP takes {width}")
        return vectors


def encoder_key(family: Family, index: int) -> str:
    """Which set of an SDXL-style file the family's `index`-th text encoder takes."""
    keys = ENCODER_KEYS.get(family.name, ("clip_l",))
    return keys[min(index, len(keys) - 1)]


def split_text(text: str, folders: folders_module.Folders | None = None) -> list[str | Embedding]:
    """Prompt text as plain-text pieces and the embeddings its `embedding:NAME` references load. As
    ComfyUI, a reference to a missing embedding is left out of the text with a logged warning."""
    pieces: list[str | Embedding] = []
    position = 0
    for match in _REFERENCE.finditer(text):
        embedding, leftover = _resolve_reference(match.group(1), folders)
        pieces.append(text[position:match.start()])
        if embedding is not None:
            pieces.append(embedding)
        position = match.end() - len(leftover)
    pieces.append(text[position:])
    return [piece for piece in pieces if piece != ""]


def _resolve_reference(word: str, folders) -> tuple[Embedding | None, str]:
    """The embedding a referenced word names, and the punctuation after the name. As ComfyUI, the whole
    word is tried first, then without trailing punctuation (`embedding:foo,` -> foo and ","); a name
    no file has gives (None, "") and a warning: the whole word is dropped."""
    candidate = word
    while candidate:
        path = _find_file(candidate, folders)
        if path is not None:
            return _load_cached(candidate, path), word[len(candidate):]
        if candidate[-1] not in _TRAILING_PUNCTUATION:
            break
        candidate = candidate[:-1]
    log.warning("%s; the prompt is encoded without it", _not_found(word.rstrip(_TRAILING_PUNCTUATION) or word,
                                                                   folders))
    return None, ""


def _not_found(name: str, folders) -> EmbeddingError:
    looked = ", ".join(str(d) for d in (folders or folders_module.current()).model_dirs(KIND))
    return EmbeddingError(f"embedding {name!r} not found in {looked} "
                          f"(looked for {name} with {', '.join(EXTENSIONS[:3])} ... and in subfolders)")


def load(name: str, folders: folders_module.Folders | None = None) -> Embedding:
    """The embedding called `name` (with or without extension), read once per file version."""
    path = _find_file(name, folders)
    if path is None:
        raise _not_found(name, folders)
    return _load_cached(name, path)


def find_file(name: str, folders: folders_module.Folders | None = None) -> Path | None:
    """The file an `embedding:NAME` reference names, None when there is none (its TI hash is of this file)."""
    return _find_file(name, folders)


def _find_file(name: str, folders) -> Path | None:
    """The file for a name: as given, with each known extension, or a file of that stem in a subfolder."""
    folders = folders or folders_module.current()
    try:
        for candidate in (name, *(name + ext for ext in EXTENSIONS)):
            try:
                path = folders.find(KIND, candidate)
            except FileNotFoundError:
                continue
            if path.is_file():
                return path
    except folders_module.UnsafePath as err:
        raise EmbeddingError(f"embedding {name!r}: {err}") from err
    if "/" not in name and "\\" not in name:
        stem = _without_extension(name) if name.lower().endswith(EXTENSIONS) else name
        for listed in folders.list(KIND):
            if PurePosixPath(_without_extension(listed)).name == stem:
                return folders.find(KIND, listed)
    return None


_cache: dict[Path, tuple[tuple, Embedding]] = {}
_cache_lock = threading.Lock()


def _load_cached(name: str, path: Path) -> Embedding:
    stat = path.stat()
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
    embedding = read_file(path, name=_without_extension(PurePosixPath(name).name))
    with _cache_lock:
        _cache[path] = (signature, embedding)
    return embedding


def read_file(path: Path, name: str | None = None) -> Embedding:
    """Read and check one embedding file."""
    path = Path(path)
    name = name or _without_extension(path.name)
    data = _read_safetensors(path, name) if path.suffix.lower() in SAFETENSORS_SUFFIXES else _read_pickle(path, name)
    info = {key: data.get(key) for key in ("step", "sd_checkpoint", "sd_checkpoint_name")
            if isinstance(data, dict) and isinstance(data.get(key), (int, str))}
    return Embedding(name, _vector_sets(data, name, path), info)


def _read_safetensors(path: Path, name: str) -> dict:
    try:
        state = open_state_dict(path)
        return {key: state[key] for key in state}
    except CheckpointError as err:
        raise EmbeddingError(f"embedding {name!r}: {err}") from err


def _read_pickle(path: Path, name: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():
            raise EmbeddingError(f"embedding {name!r} ({path.name}): refused: the pickle holds Python objects "
                                 "besides tensors, and loading them could run arbitrary code. "
                                 "Use a .safetensors version of it.") from err
        raise EmbeddingError(f"embedding {name!r} ({path.name}): not a readable embedding file (corrupt?)") from err
    except Exception as err:  # torch raises RuntimeError/EOFError/... for damaged files
        raise EmbeddingError(f"embedding {name!r} ({path.name}): not a readable embedding file "
                             f"(truncated or corrupt?): {type(err).__name__}") from err


def _vector_sets(data, name: str, path: Path) -> dict[str, torch.Tensor]:
    """The file's vectors: {"": [n, D]}, or SDXL's {"clip_l": [n, 768], "clip_g": [n, 1280]}."""
    def problem(why: str) -> EmbeddingError:
        return EmbeddingError(f"embedding {name!r} ({path.name}): {why}")

    if isinstance(data, torch.Tensor):
        return {"": _as_vectors(data, problem)}
    if not isinstance(data, dict):
        raise problem(f"expected a dict of tensors, found {type(data).__name__}")
    if isinstance(data.get("string_to_param"), dict) and data["string_to_param"]:  # A1111 .pt
        return {"": _as_vectors(next(iter(data["string_to_param"].values())), problem)}
    if any(key in data for key in PAIR_KEYS):
        sets = {key: _as_vectors(data[key], problem) for key in PAIR_KEYS if key in data}
        if len({v.shape[0] for v in sets.values()}) != 1:
            raise problem("its clip_l and clip_g sets have different numbers of vectors")
        return sets
    if "emb_params" in data:
        return {"": _as_vectors(data["emb_params"], problem)}
    tensors = {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}
    if len(tensors) != 1:
        raise problem(f"holds {len(tensors)} tensors ({', '.join(list(tensors)[:5])}); expected "
                      "'string_to_param', 'emb_params', 'clip_l'/'clip_g' or a single tensor")
    return {"": _as_vectors(next(iter(tensors.values())), problem)}


def _as_vectors(value, problem) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise problem("its vectors are not a floating-point tensor")
    vectors = value.detach().float()
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise problem(f"expected vectors of shape [n, width], found {list(value.shape)}")
    return vectors.contiguous()


def a1111_listing(folders: folders_module.Folders | None = None) -> dict:
    """GET /sdapi/v1/embeddings: readable embeddings under "loaded", unreadable ones under "skipped"."""
    folders = folders or folders_module.current()
    loaded, skipped = {}, {}
    for listed in folders.list(KIND):
        stem = PurePosixPath(_without_extension(listed)).name
        entry = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
        try:
            embedding = _load_cached(listed, folders.find(KIND, listed))
        except (EmbeddingError, OSError):
            skipped[stem] = entry
            continue
        entry.update(embedding.info, shape=embedding.width, vectors=embedding.count)
        loaded[stem] = entry
    return {"loaded": loaded, "skipped": skipped}
