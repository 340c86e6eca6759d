"""The graph editor's (LiteGraph, schema 0.4) workflow format to the API format, as ComfyUI's frontend
converts a workflow when it queues it (its graphToPrompt), so a workflow saved from ComfyUI, dropped
as a PNG or taken from Comfy-Org's templates runs as it would there.

* Widget values are listed positionally in `widgets_values`, in the order of the inputs the node
  type's /object_info entry declares (with the "control after generate" value after a seed); a link
  into a widget input replaces the widget's value.
* Muted nodes (mode 2) are left out, and so is any link from one (the consumer keeps its widget
  value, or lacks the input and validation says so).
* Bypassed nodes (mode 4) are left out and their consumers are linked through to the bypassed node's
  input that fits: the one at the output's own index, else one of the consumer's type (the frontend's
  choice); nothing when none fits or it is not linked.
* A widget value that is a list is written `{"__value__": [...]}`, as the frontend does.
* Virtual nodes are resolved away: a Reroute passes its input on; a PrimitiveNode gives its value to
  the widgets it is linked to; notes are dropped.
* Subgraphs (`definitions.subgraphs`; the node's type is the subgraph's id) are expanded: an inner
  node's id is "outer:inner" (nested: "a:b:c"), subgraph inputs take what the outer node's inputs are
  linked to (or its widget value), outer outputs come from the inner node linked to the subgraph's
  output. A muted or bypassed subgraph node mutes or bypasses everything inside.
* Legacy group nodes (type "workflow>NAME" or "workflow/NAME", defined in `extra.groupNodes`) are
  expanded as the frontend expands them: inner node i of group node 12 has the id "12:i"; the group
  node's widget values go to the inner widgets they stand for (group_nodes.py works out which), its
  inputs to the inner inputs they stand for, its outputs come from the inner outputs they stand for;
  inner links, reroutes, primitives, bypassed and muted inner nodes resolve as at the top level.
* Visual groups (the `groups` boxes) only draw; they are ignored.
* Nodes of a type /object_info does not describe are kept with their links (their widget values
  cannot be named), so validation names the missing node type instead of the workflow silently
  running without it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..nodes.graph import is_link
from .graph_layout import declared_inputs, has_seed_control, has_widget
from .group_nodes import GroupLayout, group_layout, group_node_name

MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20  # the ids of a subgraph's input and output nodes
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
VIRTUAL_TYPES = frozenset({REROUTE, PRIMITIVE, "Note", "MarkdownNote"})


class UIWorkflowError(ValueError):
    """The graph cannot be read as an editor workflow; the message says what is wrong."""


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def api_workflow(data: Any, object_info: Mapping[str, Mapping]) -> Any:
    """The API-format workflow in `data`: an editor workflow converted, a /prompt body or history
    entry's "prompt", or `data` itself (which may be API format already, or not a workflow at all)."""
    if is_ui_workflow(data):
        return ui_to_api(data, object_info)
    if isinstance(data, Mapping) and isinstance(data.get("prompt"), Mapping):
        return dict(data["prompt"])
    return data


@dataclass
class _Link:
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int
    type: Any = None


def _links(raw: Any) -> dict[Any, _Link]:
    """Links by id, from the top level's arrays or a subgraph's objects."""
    links: dict[Any, _Link] = {}
    for item in raw or []:
        if isinstance(item, (list, tuple)) and len(item) >= 5:
            links[item[0]] = _Link(item[1], item[2], item[3], item[4], item[5] if len(item) > 5 else None)
        elif isinstance(item, Mapping) and "id" in item:
            links[item["id"]] = _Link(item.get("origin_id"), item.get("origin_slot", 0), item.get("target_id"),
                                      item.get("target_slot", 0), item.get("type"))
    return links


@dataclass
class _Scope:
    """One graph level: the top-level graph, or one subgraph or group node's instance of its definition."""

    nodes: dict[Any, dict]
    links: dict[Any, _Link]
    object_info: Mapping[str, Mapping]
    prefix: str = ""  # "outer:" for the nodes inside subgraph or group node `outer`
    definition: Mapping | None = None  # the subgraph's or group node's definition (None at the top level)
    parent: _Scope | None = None
    outer: dict | None = None  # the subgraph or group node, in the parent scope
    subgraphs: dict[str, Mapping] = field(default_factory=dict)
    group_nodes: Mapping[str, Any] = field(default_factory=dict)  # extra.groupNodes, by name
    layout: GroupLayout | None = None  # in a group node's scope: how the group node maps onto it
    inner: dict[Any, _Scope] = field(default_factory=dict)  # the scopes of this level's nodes, made once
    layouts: dict[str, GroupLayout] = field(default_factory=dict)  # shared by every level

    def expands(self, node: Mapping) -> bool:
        """Whether the node stands for a graph of its own: a subgraph or a group node."""
        kind = node.get("type")
        return str(kind) in self.subgraphs or group_node_name(kind) is not None


# What an input resolves to: ("link", api_node_id, output_slot), ("value", v), or None (left out).
_Source = tuple | None


def ui_to_api(graph: Mapping, object_info: Mapping[str, Mapping]) -> dict:
    """The API-format workflow ComfyUI's frontend would queue for this editor workflow."""
    if not is_ui_workflow(graph):
        raise UIWorkflowError("not an editor workflow: it has no 'nodes' list")
    subgraphs = {str(s["id"]): s for s in (graph.get("definitions") or {}).get("subgraphs") or []
                 if isinstance(s, Mapping) and "id" in s}
    group_nodes = (graph.get("extra") or {}).get("groupNodes") or {}
    top = _Scope(_nodes(graph.get("nodes")), _links(graph.get("links")), object_info, subgraphs=subgraphs,
                 group_nodes=group_nodes if isinstance(group_nodes, Mapping) else {})
    workflow: dict[str, dict] = {}
    _emit(top, object_info, workflow, depth=0)
    # The frontend's last pass: an input linked to a node that is not in the prompt (muted, say) goes.
    for entry in workflow.values():
        for name, value in list(entry["inputs"].items()):
            if is_link(value) and value[0] not in workflow:
                del entry["inputs"][name]
    return workflow


def _nodes(raw: Any) -> dict[Any, dict]:
    return {node["id"]: node for node in raw or [] if isinstance(node, Mapping) and "id" in node}


def _emit(scope: _Scope, object_info: Mapping, workflow: dict, depth: int) -> None:
    if depth > 32:
        raise UIWorkflowError("subgraphs or group nodes nest more than 32 deep (one that contains itself?)")
    for node in scope.nodes.values():
        kind = node.get("type")
        if node.get("mode", 0) in (MUTED, BYPASSED) or kind in VIRTUAL_TYPES:
            continue
        if scope.expands(node):
            _emit(_inner_scope(scope, node), object_info, workflow, depth + 1)
            continue
        workflow[scope.prefix + str(node["id"])] = _api_node(scope, node, object_info.get(kind))


def _inner_scope(scope: _Scope, node: dict) -> _Scope:
    """The graph a subgraph or group node stands for, as its instance in `scope`."""
    if node["id"] in scope.inner:
        return scope.inner[node["id"]]
    common = dict(prefix=f"{scope.prefix}{node['id']}:", parent=scope, outer=node, subgraphs=scope.subgraphs,
                  group_nodes=scope.group_nodes, layouts=scope.layouts)
    if str(node["type"]) in scope.subgraphs:
        definition = scope.subgraphs[str(node["type"])]
        inner = _Scope(_nodes(definition.get("nodes")), _links(definition.get("links")), scope.object_info,
                       definition=definition, **common)
    else:
        inner = _group_scope(scope, node, common)
    scope.inner[node["id"]] = inner
    return inner


def _group_definition(scope: _Scope, node: dict) -> tuple[Mapping, GroupLayout]:
    name = group_node_name(node.get("type"))
    definition = scope.group_nodes.get(name)
    if name in scope.group_nodes and not isinstance(definition, Mapping):
        raise UIWorkflowError(f"node {node['id']}: the definition of group node {name!r} in extra.groupNodes "
                              "is not an object")
    if not isinstance(definition, Mapping):
        raise UIWorkflowError(
            f"node {node['id']} is a group node ({node.get('type')!r}) but the workflow defines no group node "
            f"{name!r} (extra.groupNodes has {sorted(scope.group_nodes) or 'none'})")
    if not isinstance(definition.get("nodes"), list) or not isinstance(definition.get("links", []), list):
        raise UIWorkflowError(f"node {node['id']}: the definition of group node {name!r} in extra.groupNodes "
                              "has no 'nodes' list or its 'links' is not a list")
    if name not in scope.layouts:
        try:
            scope.layouts[name] = group_layout(definition, scope.object_info)
        except (TypeError, ValueError, LookupError, AttributeError) as exc:
            raise UIWorkflowError(f"node {node['id']}: the definition of group node {name!r} in extra.groupNodes "
                                  f"cannot be read ({exc})") from exc
    return definition, scope.layouts[name]


def _group_scope(scope: _Scope, node: dict, common: dict) -> _Scope:
    """A group node's inner nodes, ids their index in the definition, with the group node's widget
    values in their widgets and links: inner ones, and from the group node's inputs (as subgraph inputs)."""
    definition, layout = _group_definition(scope, node)
    outer_slots = {slot.get("name"): index for index, slot in enumerate(node.get("inputs") or [])
                   if isinstance(slot, Mapping)}
    links: dict[Any, _Link] = {}
    nodes: dict[Any, dict] = {}
    for index, raw in enumerate(definition["nodes"]):
        if not isinstance(raw, Mapping):
            continue
        inner = {**raw, "id": index}
        inputs = [dict(slot) for slot in inner.get("inputs") or [] if isinstance(slot, Mapping)]
        for slot, entry in enumerate(inputs):
            entry["link"] = None  # the ids saved in the definition are the old graph's
            if (index, slot) in layout.inputs:
                outer = outer_slots.get(layout.inputs[(index, slot)])
                if outer is not None:
                    entry["link"] = ("outer", index, slot)
                    links[entry["link"]] = _Link(SUBGRAPH_INPUT, outer, index, slot, entry.get("type"))
            elif (index, slot) in layout.links:
                entry["link"] = ("inner", index, slot)
                links[entry["link"]] = _Link(*layout.links[(index, slot)], index, slot, entry.get("type"))
        inner["inputs"] = inputs
        nodes[index] = inner
    _set_group_widgets(nodes, links, layout, node, outer_slots, scope.object_info)
    return _Scope(nodes, links, scope.object_info, definition=definition, layout=layout, **common)


def _set_group_widgets(nodes: dict[Any, dict], links: dict[Any, _Link], layout: GroupLayout, node: dict,
                       outer_slots: dict[Any, int], object_info: Mapping) -> None:
    """The group node's widget values into the inner widgets they stand for; a group widget the user
    turned into an input and linked passes that link on (a primitive's value, as the frontend does, or
    a node's output)."""
    given: dict[int, dict[str, Any]] = {}
    for name, value in layout.widget_values(node.get("widgets_values")).items():
        widget = layout.widgets[name]
        given.setdefault(widget.index, {})[widget.input] = value
    taken = set(layout.inputs.values())
    outer_inputs = node.get("inputs") or []
    for name, widget in layout.widgets.items():
        outer = outer_slots.get(name)
        if name in taken or outer is None or outer_inputs[outer].get("link") is None:
            continue
        inner = nodes.get(widget.index)
        if inner is None:
            continue
        if inner.get("type") in (PRIMITIVE, REROUTE):  # passes on what the link brings, as a reroute
            if inner.get("type") == PRIMITIVE or not inner["inputs"]:
                inner["type"], inner["inputs"] = REROUTE, [{"name": "", "type": "*"}]
            entry = inner["inputs"][0]
        else:
            entry = next((s for s in inner["inputs"] if s.get("name") == widget.input), None)
            if entry is None:
                entry = {"name": widget.input, "type": "*", "widget": {"name": widget.input}}
                inner["inputs"].append(entry)
        entry["link"] = ("outer widget", name)
        links[entry["link"]] = _Link(SUBGRAPH_INPUT, outer, widget.index, 0, entry.get("type"))
    for index, values in given.items():
        inner = nodes.get(index)
        if inner is None or inner.get("type") == REROUTE:
            continue
        if inner.get("type") == PRIMITIVE:
            own = list(inner.get("widgets_values") or [None])
            own[0] = values.get("value", own[0])
            inner["widgets_values"] = own
        elif object_info.get(inner.get("type")) is not None:
            inner["widgets_values"] = {**_widget_values(inner, object_info.get(inner.get("type"))), **values}


def _widget_values(node: dict, info: Mapping | None) -> dict[str, Any]:
    """The node's widget values by input name."""
    values = node.get("widgets_values")
    if isinstance(values, Mapping):  # some nodes save their widgets by name
        return dict(values)
    if info is None or not isinstance(values, list):
        return {}
    named: dict[str, Any] = {}
    position = 0
    for name, kind, options in declared_inputs(info):
        if has_widget(kind, options):
            if position < len(values):
                named[name] = values[position]
            elif options.get("inkwash_added") and "default" in options:
                named[name] = options["default"]  # saved by ComfyUI: the editor shows the default
            position += 1 + has_seed_control(name, kind, options)
    return named


def _api_node(scope: _Scope, node: dict, info: Mapping | None) -> dict:
    inputs: dict[str, Any] = {name: _literal(value) for name, value in _widget_values(node, info).items()}
    for slot in node.get("inputs") or []:
        if not isinstance(slot, Mapping) or slot.get("link") is None:
            continue
        source = _resolve_link(scope, slot["link"], slot.get("type"), depth=0)
        if source is None:
            continue
        inputs[slot["name"]] = [source[1], source[2]] if source[0] == "link" else _literal(source[1])
    entry: dict[str, Any] = {"class_type": node["type"], "inputs": inputs}
    if node.get("title"):
        entry["_meta"] = {"title": node["title"]}
    return entry


def _literal(value: Any) -> Any:
    """A widget value as the API format writes it: a list is wrapped, so it cannot pass for a link."""
    return {"__value__": value} if isinstance(value, list) else value


def _resolve_link(scope: _Scope, link_id: Any, wanted_type: Any, depth: int) -> _Source:
    """Where the input fed by `link_id` really gets its value, through reroutes, primitives, bypassed
    nodes and subgraph boundaries."""
    if depth > 256:
        raise UIWorkflowError("links loop through reroutes, bypassed nodes or subgraphs")
    link = scope.links.get(link_id)
    if link is None:
        return None
    if link.origin_id == SUBGRAPH_INPUT:
        return _from_outer_input(scope, link.origin_slot, wanted_type, depth)
    origin = scope.nodes.get(link.origin_id)
    if origin is None:
        return None
    return _resolve_output(scope, origin, link.origin_slot, wanted_type, depth + 1)


def _resolve_output(scope: _Scope, node: dict, slot: int, wanted_type: Any, depth: int) -> _Source:
    kind, mode = node.get("type"), node.get("mode", 0)
    if kind == PRIMITIVE:
        values = node.get("widgets_values")
        return ("value", values[0]) if isinstance(values, list) and values else None
    if kind == REROUTE:
        inputs = node.get("inputs") or []
        if not inputs or inputs[0].get("link") is None:
            return None
        return _resolve_link(scope, inputs[0]["link"], wanted_type, depth + 1)
    if mode == MUTED:
        return None  # the consumer keeps its widget value, or lacks the input
    if mode == BYPASSED:
        return _through_bypassed(scope, node, slot, wanted_type, depth)
    if str(kind) in scope.subgraphs:
        inner = _inner_scope(scope, node)
        for link_id, link in inner.links.items():
            if link.target_id == SUBGRAPH_OUTPUT and link.target_slot == slot:
                return _resolve_link(inner, link_id, wanted_type, depth + 1)
        return None
    if group_node_name(kind) is not None:
        inner = _inner_scope(scope, node)
        if not 0 <= slot < len(inner.layout.outputs):
            return None
        index, inner_slot = inner.layout.outputs[slot]
        return _resolve_output(inner, inner.nodes[index], inner_slot, wanted_type, depth + 1)
    return ("link", scope.prefix + str(node["id"]), int(slot))


def _compatible(a: Any, b: Any) -> bool:
    """LiteGraph's isValidConnection: equal types, a wildcard, or comma-separated lists that share one."""
    if a in ("*", "", None) or b in ("*", "", None) or a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and bool(set(a.split(",")) & set(b.split(",")))


def _bypass_input(node: dict, slot: int, wanted_type: Any) -> int | None:
    """The input a bypassed node passes to its output `slot`, chosen as the frontend chooses: the input
    at the same index when it fits both the output's and the consumer's type, else the first input of
    exactly the consumer's type, else the first that fits both."""
    inputs = node.get("inputs") or []
    outputs = node.get("outputs") or []
    output_type = outputs[slot].get("type") if 0 <= slot < len(outputs) else None
    if wanted_type in ("*", "", None):
        return slot if len(inputs) > slot else (0 if inputs else None)
    types = [entry.get("type") for entry in inputs]
    if slot < len(types) and _compatible(types[slot], output_type) and _compatible(types[slot], wanted_type):
        return slot
    if wanted_type in types:
        return types.index(wanted_type)
    return next((i for i, t in enumerate(types) if _compatible(t, output_type) and _compatible(t, wanted_type)), None)


def _through_bypassed(scope: _Scope, node: dict, slot: int, wanted_type: Any, depth: int) -> _Source:
    """What a bypassed node's input passes through; nothing when no input fits or it is not linked."""
    index = _bypass_input(node, slot, wanted_type)
    if index is None:
        return None
    link_id = (node.get("inputs") or [])[index].get("link")
    return None if link_id is None else _resolve_link(scope, link_id, wanted_type, depth + 1)


def _from_outer_input(scope: _Scope, index: int, wanted_type: Any, depth: int) -> _Source:
    """A subgraph or group node input: what the outer node's matching input is linked to, or (a subgraph's)
    its widget value."""
    if scope.parent is None or scope.outer is None or scope.definition is None:
        return None
    outer_inputs = scope.outer.get("inputs") or []
    if not 0 <= index < len(outer_inputs):  # the subgraph node's inputs are the subgraph's, in order
        return None
    slot = outer_inputs[index]
    if slot.get("link") is not None:
        return _resolve_link(scope.parent, slot["link"], wanted_type, depth + 1)
    if scope.layout is not None:
        return None  # a group node's unlinked input: the inner widget keeps the group node's value
    # a promoted widget: its value is the subgraph node's, in the order of its widget inputs
    widget_names = [s.get("name") for s in outer_inputs if s.get("widget")]
    values = scope.outer.get("widgets_values")
    if slot.get("widget") and isinstance(values, list) and slot.get("name") in widget_names:
        position = widget_names.index(slot.get("name"))
        if position < len(values):
            return ("value", values[position])
    return None
