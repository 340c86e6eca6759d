"""Which installed model file an A1111 reference means: a checkpoint title "name [hash]", a bare hash, an
infotext's `Model hash` / `Model`, its `Lora hashes` for the prompt's `<lora:name:...>` tags.

The hash decides first, so a file renamed since the picture was made is still found; the name is the
fallback. Hashes come from file_hashes: known ones are compared first, and with `wait` the files not
hashed yet are hashed now (the A1111 API, as A1111 does); without it (the tabs) only files small enough for
a listing to hash are, and the answer says how many big files the background hasher has still to do, so
the page can say why a hash did not match yet.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..nodes.folders import Folders
from ..nodes.formats import file_hashes

_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
_TITLE = re.compile(r"^(.*?)\s*\[([0-9a-fA-F]{8,64})\]$")
_LORA_TAG_NAME = re.compile(r"<(lora|lyco):([^:>]+)")


@dataclass
class Match:
    name: str | None  # the file as the folder lists it; None when nothing matched
    by: str | None = None  # "hash" or "name"
    unhashed: int = 0  # files whose hash wasn't known yet and weren't waited for


def split_title(value: str) -> tuple[str, str | None]:
    """("name", "hash") of A1111's "name [hash]"; a bare hex string is both a name and a hash."""
    value = value.strip()
    titled = _TITLE.match(value)
    if titled:
        return titled.group(1), titled.group(2).lower()
    return value, value.lower() if _HEX.match(value) else None


def same_name(wanted: str, name: str) -> bool:
    """A1111's ways of naming a file: as listed, without its extension, or by its file stem."""
    return wanted in (name, os.path.splitext(name)[0], os.path.splitext(os.path.basename(name))[0])


def find_model(folders: Folders, folder: str, name: str | None = None, short_hash: str | None = None,
               kind: str = file_hashes.SHA256, wait: bool = True) -> Match:
    """The file in `folder` whose hash starts with `short_hash` (10 or 12 digits, or the full sha256), else
    the one `name` names."""
    names = folders.list(folder)
    named = [n for n in names if name and same_name(name, n)]
    if not short_hash:
        return Match(named[0], "name") if named else Match(None)
    wanted = short_hash.strip().lower()
    hasher = file_hashes.current()
    paths, unknown = {}, []
    for candidate in named + [n for n in names if n not in named]:  # the named file first: it is the likely one
        try:
            paths[candidate] = folders.find(folder, candidate)
            digest = hasher.known(paths[candidate], kind)
        except (OSError, ValueError):
            continue
        if digest is None:
            unknown.append(candidate)
        elif digest.lower().startswith(wanted):
            return Match(candidate, "hash")
    waited_for = [n for n in unknown if wait or _small(paths[n])]  # as listings: small files are hashed now
    for candidate in waited_for:
        try:
            if hasher.wait_for_digest(paths[candidate], kind).lower().startswith(wanted):
                return Match(candidate, "hash")
        except (OSError, ValueError):
            continue
    unknown = [n for n in unknown if n not in waited_for]
    hasher.enqueue([paths[n] for n in unknown], kind)
    return Match(named[0] if named else None, "name" if named else None, len(unknown))


def _small(path) -> bool:
    try:
        return path.stat().st_size <= file_hashes.HASH_ON_LISTING_BYTES
    except OSError:
        return False


def find_checkpoint(folders: Folders, value: str, wait: bool = True) -> Match:
    """A checkpoint as A1111's API and options name one: file name, name without extension, title
    "name [hash]", or a bare short hash or sha256."""
    name, short_hash = split_title(value)
    return find_model(folders, "checkpoints", name, short_hash, wait=wait)


def infotext_checkpoint(folders: Folders, parsed: dict, wait: bool = False) -> Match:
    """The checkpoint an infotext (parse_infotext's dict) was made with: its `Model hash`, else `Model`."""
    model_hash = str(parsed.get("Model hash") or "").strip()
    return find_model(folders, "checkpoints", str(parsed.get("Model") or "").strip() or None,
                      model_hash if _HEX.match(model_hash) else None, wait=wait)


def parse_hash_list(text: str | None) -> dict[str, str]:
    """A1111's "Lora hashes" / "TI hashes": `name: hash, name: hash` -> {name: hash}."""
    pairs = {}
    for item in (text or "").split(","):
        name, _, value = item.rpartition(":")
        if name.strip() and _HEX.match(value.strip()):
            pairs[name.strip()] = value.strip().lower()
    return pairs


def relink_lora_tags(prompt: str, lora_hashes: str | None, folders: Folders, wait: bool = False) -> str:
    """The prompt with each `<lora:name:...>` tag whose `Lora hashes` entry matches an installed LoRA under
    another name renamed to that file (its name without extension, as A1111 does when an infotext is pasted)."""
    hashes = parse_hash_list(lora_hashes)
    if not hashes:
        return prompt

    def relink(match: re.Match) -> str:
        written = match.group(2).strip()
        short_hash = hashes.get(written.translate(str.maketrans("", "", ":,")))
        if not short_hash:
            return match.group(0)
        found = find_model(folders, "loras", written, short_hash, kind=file_hashes.ADDNET, wait=wait)
        if found.by != "hash" or same_name(written, found.name):
            return match.group(0)
        return f"<{match.group(1)}:{os.path.splitext(found.name)[0]}"

    return _LORA_TAG_NAME.sub(relink, prompt)
