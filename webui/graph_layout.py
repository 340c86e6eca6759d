"""API-format workflows laid out in the graph editor's own (LiteGraph, schema 0.4) workflow format
(the other direction, as the frontend converts, is ui_workflow.py).

An API-format workflow names each node's inputs; the editor's format lists a node's widget values
positionally, in the order of the inputs the node's /object_info entry declares, and keeps links in a
table of its own. Both directions therefore need the /object_info entries of the node types involved.

The editor adds a "control after generate" widget right after a seed widget (an INT input flagged
`control_after_generate`, or named seed/noise_seed when the flag is absent); its value is stored in
`widgets_values` but is no input of the API format.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..nodes.graph import is_link

# Input types the editor draws as a widget; any other type is a link-only slot.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
SEED_CONTROLS = ("fixed", "increment", "decrement", "randomize")

COLUMN_GAP = 80
ROW_GAP = 50
ORIGIN = (40.0, 60.0)


def declared_inputs(info: Mapping) -> list[tuple[str, str, dict]]:
    """(name, type, options) of a node type's inputs, required then optional, in declared order."""
    inputs = info.get("input") or {}
    order = info.get("input_order") or {}
    result = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section) or list(specs):
            spec = specs.get(name)
            if spec is None:
                continue
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            result.append((name, "COMBO" if isinstance(kind, (list, tuple)) else str(kind), options))
    return result


def has_widget(kind: str, options: Mapping) -> bool:
    return kind in WIDGET_TYPES and not options.get("forceInput")


def has_seed_control(name: str, kind: str, options: Mapping) -> bool:
    """Whether the editor puts a control-after-generate widget after this widget (its rule, kept)."""
    if "control_after_generate" in options:
        return bool(options["control_after_generate"]) and kind in ("INT", "FLOAT", "COMBO")
    return kind == "INT" and name in SEED_NAMES


def _ui_node_id(node_id: str, taken: set[int], next_free: list[int]) -> int:
    if node_id.isdigit() and int(node_id) not in taken:
        return int(node_id)
    while next_free[0] in taken:
        next_free[0] += 1
    return next_free[0]


def _topological_order(workflow: Mapping[str, Mapping]) -> list[str]:
    """Node ids, every node after the nodes it takes links from; ties (and cycles) by id."""
    def sort_key(node_id: str):
        return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)

    sources = {node_id: {str(v[0]) for v in (node.get("inputs") or {}).values() if is_link(v)} & set(workflow)
               for node_id, node in workflow.items()}
    order: list[str] = []
    placed: set[str] = set()
    remaining = sorted(workflow, key=sort_key)
    while remaining:
        ready = [n for n in remaining if sources[n] <= placed] or remaining[:1]  # a cycle: break it
        for node_id in ready:
            order.append(node_id)
            placed.add(node_id)
        remaining = [n for n in remaining if n not in placed]
    return order


def _node_size(widgets: list[tuple[str, str, dict]], slots: int) -> list[float]:
    multiline = sum(1 for _, kind, options in widgets if kind == "STRING" and options.get("multiline"))
    width = 400.0 if multiline else 315.0
    height = 46.0 + 24.0 * slots + 26.0 * (len(widgets) - multiline) + 110.0 * multiline
    return [width, height]


def api_to_ui(workflow: Mapping[str, Mapping], object_info: Mapping[str, Mapping],
              seed_control: str = "randomize") -> dict:
    """The editor's workflow for an API-format `workflow`, laid out left to right in dependency order.

    Node ids stay the same where they are integers. Inputs of unknown node types are taken as links
    when they look like one and as widgets otherwise, in the order the workflow lists them.
    """
    if seed_control not in SEED_CONTROLS:
        raise ValueError(f"seed_control must be one of {SEED_CONTROLS}")
    order = _topological_order(workflow)
    taken = {int(n) for n in workflow if n.isdigit()}
    next_free = [max(taken, default=0) + 1]
    ui_ids: dict[str, int] = {}
    for node_id in order:
        ui_ids[node_id] = _ui_node_id(node_id, set(ui_ids.values()), next_free)
        taken.add(ui_ids[node_id])

    nodes: dict[str, dict] = {}
    widgets_of: dict[str, list[tuple[str, str, dict]]] = {}
    for index, node_id in enumerate(order):
        node = workflow[node_id]
        class_type = str(node.get("class_type"))
        values = node.get("inputs") or {}
        info = object_info.get(class_type)
        if info is not None:
            declared = declared_inputs(info)
            outputs = [{"name": name, "type": kind, "links": [], "slot_index": slot}
                       for slot, (kind, name) in enumerate(zip(info.get("output") or [],
                                                               info.get("output_name") or info.get("output") or []))]
        else:
            declared = [(name, "*", {}) if is_link(value) else (name, "*", {"widget": True})
                        for name, value in values.items()]
            outputs = []
        slots, widgets, widget_values = [], [], []
        for name, kind, options in declared:
            value = values.get(name, options.get("default"))
            widget = has_widget(kind, options) or (info is None and options.get("widget"))
            if widget:
                widgets.append((name, kind, options))
                widget_values.append(None if is_link(value) else value)
                if has_seed_control(name, kind, options):
                    widget_values.append(seed_control)
            if not widget or is_link(value):
                slot: dict = {"name": name, "type": kind, "link": None}
                if widget:
                    slot["widget"] = {"name": name}
                slots.append(slot)
        ui_node = {
            "id": ui_ids[node_id], "type": class_type, "pos": [0.0, 0.0],
            "size": _node_size(widgets, max(len(slots), len(outputs))),
            "flags": {}, "order": index, "mode": 0, "inputs": slots, "outputs": outputs,
            "properties": {"Node name for S&R": class_type}, "widgets_values": widget_values,
        }
        title = (node.get("_meta") or {}).get("title")
        if title:
            ui_node["title"] = title
        nodes[node_id] = ui_node
        widgets_of[node_id] = widgets

    links = []
    for node_id in order:
        target = nodes[node_id]
        for slot_index, slot in enumerate(target["inputs"]):
            value = (workflow[node_id].get("inputs") or {}).get(slot["name"])
            source_id = str(value[0]) if is_link(value) else None
            if source_id not in nodes:
                continue  # a dangling link: leave the slot empty, as the editor would
            source = nodes[source_id]
            out_slot = value[1]
            while len(source["outputs"]) <= out_slot:  # unknown source type: grow its outputs
                source["outputs"].append({"name": slot["type"], "type": slot["type"], "links": [],
                                          "slot_index": len(source["outputs"])})
            link_type = source["outputs"][out_slot]["type"]
            link_id = len(links) + 1
            links.append([link_id, source["id"], out_slot, target["id"], slot_index, link_type])
            slot["link"] = link_id
            source["outputs"][out_slot]["links"].append(link_id)

    _lay_out(order, workflow, nodes)
    return {
        "last_node_id": max((n["id"] for n in nodes.values()), default=0),
        "last_link_id": len(links),
        "nodes": [nodes[node_id] for node_id in order],
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0.0, 0.0]}},
        "version": 0.4,
    }


def _lay_out(order: list[str], workflow: Mapping[str, Mapping], nodes: dict[str, dict]) -> None:
    """Columns by longest path from a source node; within a column, nodes stacked in order."""
    depth: dict[str, int] = {}
    for node_id in order:
        sources = [str(v[0]) for v in (workflow[node_id].get("inputs") or {}).values()
                   if is_link(v) and str(v[0]) in depth]
        depth[node_id] = 1 + max((depth[s] for s in sources), default=-1)
    columns: dict[int, list[str]] = {}
    for node_id in order:
        columns.setdefault(depth[node_id], []).append(node_id)
    x = ORIGIN[0]
    for column in sorted(columns):
        y = ORIGIN[1]
        for node_id in columns[column]:
            nodes[node_id]["pos"] = [x, y]
            y += nodes[node_id]["size"][1] + ROW_GAP
        x += max(nodes[n]["size"][0] for n in columns[column]) + COLUMN_GAP
