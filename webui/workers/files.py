"""What travels with a job to a remote worker, and back, as bytes: no folder is shared.

To the worker: the input-folder images its loader nodes name (LoadImage, LoadImageMask: any input
declared with `image_upload`), written into the worker's own input folder under the same names, so
their content fingerprints (and so the cache) match the server's.

Back: each file an output node names in its ui dict ({"filename", "subfolder", "type"} with type
"output" or "temp") comes with its content; the server saves it into its own output or temp folder
under the same prefix, numbered as its own saves are, and the ui names the server's file. A file a
worker sends again (a cached output node re-shows its image) is saved once.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path

from ...nodes import folders as folders_module
from ...nodes.runtime import image_files

FILE_KINDS = ("output", "temp")
DATA_KEY = "data"  # a file entry's content, on the way back from a worker
_NUMBERED = re.compile(r"^(?P<name>.*)_\d+_?(?P<extension>\.[^./]+)$")


def input_files(workflow: Mapping, registry: Mapping, input_dir: Path) -> dict[str, bytes]:
    """The input-folder files a workflow's loader nodes name, by name."""
    files: dict[str, bytes] = {}
    for node in workflow.values():
        cls = registry.get(node.get("class_type")) if isinstance(node, Mapping) else None
        inputs = node.get("inputs") or {} if cls is not None else {}
        for declared in getattr(cls, "inputs", ()):
            name = inputs.get(declared.name)
            if getattr(declared, "image_upload", False) and isinstance(name, str) and name not in files:
                path = folders_module.safe_path(Path(input_dir), name)
                if path.is_file():
                    files[name] = path.read_bytes()
    return files


def write_inputs(files: Mapping[str, bytes], input_dir: Path) -> None:
    """A job's input files into a worker's input folder (replacing what is there under the name)."""
    for name, data in files.items():
        folders_module.write_atomically(folders_module.safe_path(Path(input_dir), name), data)


def _is_file(entry: object) -> bool:
    return isinstance(entry, dict) and entry.get("type") in FILE_KINDS and isinstance(entry.get("filename"), str)


def _folder(folders: folders_module.Folders, entry: dict) -> Path:
    return Path(folders.output_dir if entry["type"] == "output" else folders.temp_dir)


def with_contents(ui: dict, folders: folders_module.Folders) -> dict:
    """A worker's ui dict with each file entry carrying its bytes (worker side)."""
    packed = {}
    for key, items in ui.items():
        packed[key] = [_with_content(entry, folders) if _is_file(entry) else entry for entry in items] \
            if isinstance(items, list) else items
    return packed


def _with_content(entry: dict, folders: folders_module.Folders) -> dict:
    name = "/".join(part for part in (entry.get("subfolder"), entry["filename"]) if part)
    return {**entry, DATA_KEY: folders_module.safe_path(_folder(folders, entry), name).read_bytes()}


class ReceivedFiles:
    """Saves the files a worker sends back into the server's folders, each once (server side)."""

    def __init__(self, folders: folders_module.Folders):
        self.folders = folders
        self._saved: dict[tuple, dict] = {}  # (worker incarnation, type, subfolder, filename) -> server's entry
        self._lock = threading.Lock()

    def store(self, ui: dict, incarnation: str) -> dict:
        """`ui` naming the server's files instead of the worker's."""
        stored = {}
        for key, items in ui.items():
            if not isinstance(items, list):
                stored[key] = items
                continue
            stored[key] = [self._store_entry(entry, incarnation) if _is_file(entry) and DATA_KEY in entry
                           else entry for entry in items]
        return stored

    def _store_entry(self, entry: dict, incarnation: str) -> dict:
        data = entry[DATA_KEY]
        key = (incarnation, entry["type"], entry.get("subfolder") or "", entry["filename"])
        with self._lock:
            known = self._saved.get(key)
            if known is not None:
                return dict(known)
            # the worker's `{prefix}_{counter}_.ext`: saved here under the same prefix, numbered here
            filename = Path(entry["filename"])
            match = _NUMBERED.match(filename.name)
            name, extension = (match["name"], match["extension"]) if match else (filename.stem, filename.suffix)
            prefix = "/".join(part for part in (entry.get("subfolder"), name) if part)
            saved = image_files.save_file(data, _folder(self.folders, entry), prefix, extension or ".png",
                                          durable=entry["type"] == "output")
            result = {**{k: v for k, v in entry.items() if k != DATA_KEY},
                      "filename": saved.filename, "subfolder": saved.subfolder}
            self._saved[key] = result
            return dict(result)
