"""The Workflows tab's data side: where workflows come from (the shipped templates, the user's saved
ones, uploaded JSON or PNG), converting the graph editor's format to the API format, saving under a
safe name, and the form generated from each node's declared inputs."""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...nodes.folders import write_atomically
from ...nodes.graph import is_link
from ...nodes.registry import object_info
from ...nodes.formats.png_metadata import PngTextTooLarge, read_png_metadata
from ..context import ServerContext
from ..generation import WORKFLOWS_DIR
from ..graph_layout import api_to_ui, declared_inputs, has_widget
from ..json_errors import Refused
from ..ui_workflow import UIWorkflowError, api_workflow
from ..user_files import user_path, user_root

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# A saved workflow's name: one file name (no folders), starting with a letter or digit.
SAVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.()+-]{0,99}")


class WorkflowError(ValueError):
    """A workflow that can't be opened or saved; the message says why."""


def saved_dir(ctx: ServerContext) -> Path:
    """Where the graph editor keeps the user's workflows; the tab shares it."""
    return user_root(ctx) / "workflows"


# -- opening -------------------------------------------------------------------------------------------

def workflow_sources(ctx: ServerContext) -> list[tuple[str, str]]:
    """(label, value) of every workflow the tab can open: the templates, then the saved ones."""
    sources = [(f"Template: {p.stem}", f"template:{p.stem}") for p in sorted(WORKFLOWS_DIR.glob("*.json"))
               if TEMPLATE_NAME.fullmatch(p.stem)]
    root = saved_dir(ctx)
    if root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.endswith(".json") and not filename.startswith("."):
                    relative = (Path(dirpath) / filename).relative_to(root).as_posix()
                    sources.append((f"Saved: {relative[:-5]}", f"saved:{relative}"))
    return sources


def load_source(ctx: ServerContext, source: str) -> tuple[dict, str]:
    """(API workflow, suggested save name) for a value of workflow_sources."""
    kind, _, name = str(source or "").partition(":")
    if kind == "template" and TEMPLATE_NAME.fullmatch(name):
        path = WORKFLOWS_DIR / f"{name}.json"
    elif kind == "saved":
        try:
            path = user_path(saved_dir(ctx), name)
        except Refused as exc:
            raise WorkflowError(exc.message) from None
    else:
        raise WorkflowError(f"unknown workflow {source!r}")
    if not path.is_file():
        raise WorkflowError(f"{name} no longer exists")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise WorkflowError(f"{name} is not valid JSON: {exc}") from None
    return to_api(ctx, data), Path(name).stem


def load_upload(ctx: ServerContext, path: str | Path) -> dict:
    """The API workflow of an uploaded .json (API or editor format) or of a PNG that carries one."""
    path = Path(path)
    if path.stat().st_size > ctx.max_upload_bytes:
        raise WorkflowError(f"{path.name} is larger than {ctx.max_upload_bytes} bytes")
    data = path.read_bytes()
    if data.startswith(PNG_SIGNATURE):
        try:
            metadata = read_png_metadata(data)
        except PngTextTooLarge as exc:
            raise WorkflowError(f"{path.name}: {exc}") from None
        found = metadata.get("prompt") or metadata.get("workflow")
        if found is None:
            raise WorkflowError(f"{path.name} carries no workflow")
        return to_api(ctx, found)
    try:
        return to_api(ctx, json.loads(data))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, WorkflowError):
            raise
        raise WorkflowError(f"{path.name} is neither JSON nor a PNG with a workflow") from None


def to_api(ctx: ServerContext, data: Any) -> dict:
    """API format from the API format, the editor's format, or a /prompt body or history entry."""
    try:
        data = api_workflow(data, object_info(dict(ctx.registry)))
    except UIWorkflowError as exc:
        raise WorkflowError(str(exc)) from None
    if not isinstance(data, dict) or not data:
        raise WorkflowError("not a workflow: expected a JSON object of nodes")
    for node_id, node in data.items():
        if not (isinstance(node, dict) and isinstance(node.get("class_type"), str)
                and isinstance(node.get("inputs", {}), dict)):
            raise WorkflowError(f"node {node_id!r} is not a node (needs class_type and inputs)")
    return data


# -- saving --------------------------------------------------------------------------------------------

def clean_name(name: Any) -> str:
    """A saved workflow's file stem, or WorkflowError for names that could leave the folder."""
    name = str(name or "").strip()
    if name.lower().endswith(".json"):
        name = name[:-5]
    if not SAVED_NAME.fullmatch(name) or ".." in name:
        raise WorkflowError("a name is letters, digits, spaces and _ . ( ) + - (no folders), "
                            f"starting with a letter or digit; got {name!r}")
    return name


def save_workflow(ctx: ServerContext, name: Any, workflow: dict) -> str:
    """Save in the graph editor's format (so the editor opens it too); returns its source value."""
    stem = clean_name(name)
    try:
        path = user_path(saved_dir(ctx), f"{stem}.json")
    except Refused as exc:
        raise WorkflowError(exc.message) from None
    editor_format = api_to_ui(to_api(ctx, workflow), object_info(dict(ctx.registry)), seed_control="fixed")
    write_atomically(path, json.dumps(editor_format, indent=2).encode())
    return f"saved:{stem}.json"


# -- the form ------------------------------------------------------------------------------------------

@dataclass
class Field:
    """One literal input of one node, with what its declaration says about it."""

    node_id: str
    node_title: str
    name: str
    kind: str  # INT, FLOAT, STRING, BOOLEAN or COMBO
    value: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: list | None = None
    multiline: bool = False
    image_upload: bool = False
    tooltip: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _node_order(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _combo_choices(info: dict, name: str) -> list:
    for section in ("required", "optional"):
        spec = ((info.get("input") or {}).get(section) or {}).get(name)
        if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], (list, tuple)):
            return list(spec[0])
    return []


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def offered(choices: list) -> list:
    """The choices a user is offered: ComfyUI's *_gpu samplers only on a machine with a GPU."""
    if gpu_available():
        return choices
    return [c for c in choices if not (isinstance(c, str) and c.endswith("_gpu"))]


def form_fields(workflow: dict, info: dict) -> list[Field]:
    """A field for each literal (non-link) input of each known node, in node-id then declared order."""
    fields = []
    for node_id in sorted(workflow, key=_node_order):
        node = workflow[node_id]
        node_info = info.get(node.get("class_type"))
        if node_info is None:
            continue
        inputs = node.get("inputs") or {}
        title = (node.get("_meta") or {}).get("title") or node_info.get("display_name") or node["class_type"]
        for name, kind, options in declared_inputs(node_info):
            if name not in inputs or is_link(inputs[name]) or not has_widget(kind, options):
                continue
            field = Field(node_id, title, name, kind, inputs[name], tooltip=options.get("tooltip"))
            if kind in ("INT", "FLOAT"):
                field.minimum, field.maximum = options.get("min"), options.get("max")
                field.step = options.get("step", 1 if kind == "INT" else None)
            elif kind == "COMBO":
                field.choices = offered(_combo_choices(node_info, name))
                field.image_upload = bool(options.get("image_upload"))
            elif kind == "STRING":
                field.multiline = bool(options.get("multiline"))
            fields.append(field)
    return fields


def apply_values(workflow: dict, fields: list[Field], values: list) -> dict:
    """A copy of `workflow` with the form's values written into their node inputs (typed)."""
    updated = json.loads(json.dumps(workflow))
    for field, value in zip(fields, values):
        if value is None:
            continue
        if field.kind == "INT":
            value = int(round(float(value)))
        elif field.kind == "FLOAT":
            value = float(value)
        elif field.kind == "BOOLEAN":
            value = bool(value)
        else:
            value = str(value)
        updated[field.node_id]["inputs"][field.name] = value
    return updated
