"""A1111's `<lora:name:weight>` prompt tags, turned into LoraLoader nodes.

As A1111's extra networks: `<lora:name>` is weight 1; `<lora:name:w>` sets both the text encoder's
and the UNet's multiplier; `<lora:name:te:unet>` (or `te=` / `unet=`) sets them apart; `<lyco:...>`
is the same. The tags are removed from the prompt that is encoded, and a name is a file in the loras
folder, given as its stem (as A1111 lists them), its name with extension, or its relative path.
"""
from __future__ import annotations

import math
import os
import re
from typing import NamedTuple

from ..nodes.folders import Folders
from ..nodes.formats import file_hashes

# A1111's extra-network syntax `<kind:args>`, for the kinds that name a LoRA.
_TAG = re.compile(r"<(lora|lyco):([^>]+)>")
# ComfyUI's node that loads a checkpoint; LoRAs go between it and its MODEL/CLIP users.
CHECKPOINT_LOADER = "CheckpointLoaderSimple"


class LoraTag(NamedTuple):
    name: str  # as written in the tag
    weight: float  # the UNet's multiplier
    text_weight: float  # the text encoder's multiplier


class LoraTagError(ValueError):
    """A tag that can't be used: a LoRA name not in the folder, or a weight that isn't a number."""


def extract(prompt: str) -> tuple[str, list[LoraTag]]:
    """(prompt without its LoRA tags, the tags in order)."""
    tags: list[LoraTag] = []

    def take(match: re.Match) -> str:
        tags.append(_parse(match.group(2), match.group(0)))
        return ""

    return _TAG.sub(take, prompt), tags


def _parse(args: str, tag: str) -> LoraTag:
    """A1111's ExtraNetworkParams: `:`-separated items, `key=value` ones named, the rest positional."""
    positional, named = [], {}
    for item in args.split(":"):
        key, equals, value = item.partition("=")
        if equals:
            named[key.strip()] = value
        else:
            positional.append(item)
    name = positional[0].strip() if positional else ""
    if not name:
        raise LoraTagError(f"{tag}: a LoRA tag needs a LoRA name")
    try:
        text_weight = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
        weight = float(named.get("unet", positional[2] if len(positional) > 2 else text_weight))
    except ValueError:
        raise LoraTagError(f"{tag}: the weight is not a number") from None
    if not (math.isfinite(weight) and math.isfinite(text_weight)):
        raise LoraTagError(f"{tag}: the weight is not a finite number")
    return LoraTag(name, weight, text_weight)


def find_lora(name: str, folders: Folders) -> str:
    """The loras-folder file name for a tag's name: exact, without extension, or by file stem."""
    names = folders.list("loras")
    for candidate in names:
        if name == candidate or name == os.path.splitext(candidate)[0]:
            return candidate
    by_stem = [n for n in names if os.path.splitext(os.path.basename(n))[0] == name]
    if by_stem:
        return by_stem[0]
    shown = ", ".join(_display_name(n) for n in names[:20]) or "none"
    raise LoraTagError(f"unknown LoRA {name!r} in the prompt; the loras folder has: {shown}")


def split_missing(tags: list[LoraTag], folders: Folders) -> tuple[list[LoraTag], list[str]]:
    """(the tags whose LoRA is in the loras folder, the names of those that are not)."""
    found, missing = [], []
    for tag in tags:
        try:
            find_lora(tag.name, folders)
        except LoraTagError:
            missing.append(tag.name)
        else:
            found.append(tag)
    return found, missing


def not_found_message(names: list[str], folders: Folders) -> str:
    """The warning for prompt tags naming LoRAs the folder lacks (A1111's "Lora not found")."""
    shown = ", ".join(_display_name(n) for n in folders.list("loras")[:20]) or "none"
    return f"LoRA not found, generated without it: {', '.join(names)} (the loras folder has: {shown})"


def _display_name(file_name: str) -> str:
    return os.path.splitext(os.path.basename(file_name))[0]


def add_lora_nodes(workflow: dict, loras: list[LoraTag], folders: Folders, loader_id: str | None = None) -> None:
    """Chain a LoraLoader per tag after the checkpoint loader (`loader_id`, default "4" or the first
    one found), and move every user of the loader's MODEL and CLIP to the last LoraLoader's."""
    if not loras:
        return
    files = [find_lora(tag.name, folders) for tag in loras]  # every name checked before any change
    loader_id = loader_id or _checkpoint_loader(workflow)
    model, clip = [loader_id, 0], [loader_id, 1]
    ids = []
    for tag, file_name in zip(loras, files):
        node_id = _free_id(workflow)
        workflow[node_id] = {"class_type": "LoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": file_name,
            "strength_model": tag.weight, "strength_clip": tag.text_weight}}
        model, clip = [node_id, 0], [node_id, 1]
        ids.append(node_id)
    for node_id, node in workflow.items():
        if node_id in ids:
            continue
        for name, value in node.get("inputs", {}).items():
            if value == [loader_id, 0]:
                node["inputs"][name] = list(model)
            elif value == [loader_id, 1]:
                node["inputs"][name] = list(clip)


def _checkpoint_loader(workflow: dict) -> str:
    loaders = [node_id for node_id, node in workflow.items() if node.get("class_type") == CHECKPOINT_LOADER]
    if not loaders:
        raise LoraTagError("LoRA tags need a workflow with a checkpoint loader")
    return "4" if "4" in loaders else loaders[0]


def _free_id(workflow: dict) -> str:
    """The next unused numeric node id from 50 up (the templates number their own nodes below that)."""
    number = 50
    while str(number) in workflow:
        number += 1
    return str(number)


def infotext_fields(loras: list[LoraTag], folders: Folders) -> dict:
    """A1111's "Lora hashes" infotext field: "name: hash, ..." with each name as written in its tag
    (less `:` and `,`) and A1111's 12-digit LoRA hash; {} without LoRAs."""
    hashes: dict[str, str] = {}
    for tag in loras:
        path = folders.find("loras", find_lora(tag.name, folders))
        name = tag.name.translate(str.maketrans("", "", ":,"))
        hashes[name] = file_hashes.current().wait_for(path, file_hashes.ADDNET)
    if not hashes:
        return {}
    return {"Lora hashes": ", ".join(f"{name}: {value}" for name, value in hashes.items())}
