"""Textual-inversion embeddings by name, without loading them: the names in the `embeddings` folder and
A1111's bare names in a prompt rewritten to ComfyUI's `embedding:NAME` (nodes/runtime/embeddings.py
loads the files; the web layer only needs the names)."""
from __future__ import annotations

import re
from pathlib import PurePosixPath

from .. import folders as folders_module

KIND = "embeddings"
REFERENCE = "embedding:"
EXTENSIONS = (".safetensors", ".pt", ".bin", ".pth", ".ckpt", ".sft")


def without_extension(name: str) -> str:
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    return name


def list_names(folders: folders_module.Folders | None = None) -> list[str]:
    """Embedding names as GET /embeddings lists them: paths in the folder without the extension."""
    folders = folders or folders_module.current()
    return [without_extension(name) for name in folders.list(KIND)]


def mark_names(prompt: str, names: list[str]) -> str:
    """Rewrite bare embedding names in a prompt to `embedding:NAME`, as A1111 finds them: whole words,
    any case. `names` are embedding names or files (extensions and subfolders allowed); text already
    marked and `<...>` tags (LoRA) are left alone."""
    references: dict[str, str] = {}  # lower-case stem -> name to write
    for name in names:
        reference = without_extension(name)
        stem = PurePosixPath(reference.replace("\\", "/")).name
        if stem and not any(c.isspace() for c in reference):
            references.setdefault(stem.lower(), reference)
    if not references:
        return prompt
    words = "|".join(re.escape(stem) for stem in sorted(references, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w\-/\\])(?<!{REFERENCE})(?:{words})(?![\w\-])", re.IGNORECASE)

    def mark(text: str) -> str:
        return pattern.sub(lambda m: REFERENCE + references[m.group(0).lower()], text)

    # odd pieces of the split are <...> tags
    return "".join(piece if i % 2 else mark(piece) for i, piece in enumerate(re.split(r"(<[^<>]*>)", prompt)))
