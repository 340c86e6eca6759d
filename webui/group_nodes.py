"""The layout of a legacy group node (the editor's "Convert to Group Node": type "workflow>NAME", or the
older "workflow/NAME", defined in the workflow's `extra.groupNodes[NAME]`), worked out as ComfyUI's
frontend registers one (its groupNode.ts), so that ui_workflow can expand the group node into its inner
nodes with the values and links the frontend would queue.

A definition holds the inner nodes as they were when grouped (`nodes`, in execution order; an inner
node is known by its index there), the links between them (`links`: [origin index, origin slot, target
index, target slot, origin's id in the old graph, type]; origin index null for a link from outside) and
the inner outputs that were linked outside the group (`external`: [index, slot, type]). From that and
the node types' inputs the frontend builds the group node's inputs in this order:

* per inner node, in order: its widgets (renamed "<title or type> <name>" when the name is taken), then
  its non-widget inputs that no inner link feeds;
* after all inner nodes: the widgets that inner nodes had converted to inputs and no inner link feeds.

The group node's `widgets_values` list those widgets' values in that order, each seed followed by its
control_after_generate value, an image upload combo by its button's; an inner PrimitiveNode that feeds
inner widgets becomes one widget ("value", or "<title> value"), with a control (and, on a combo, a
filter) value after it. The group node's outputs
are the inner outputs no inner link uses, plus those linked outside the group, in inner-node order.
Per-input and per-output `config` (a name, `visible`) is honoured as the frontend does.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .graph_layout import WIDGET_TYPES, declared_inputs, has_seed_control, has_widget

GROUP_NODE_PREFIXES = ("workflow>", "workflow/")
PRIMITIVE, REROUTE = "PrimitiveNode", "Reroute"


def group_node_name(kind: Any) -> str | None:
    """The group node definition a node type names, or None for any other type."""
    if isinstance(kind, str):
        for prefix in GROUP_NODE_PREFIXES:
            if kind.startswith(prefix):
                return kind[len(prefix):]
    return None


@dataclass
class GroupWidget:
    """One widget of the group node: the inner node and input it sets."""

    index: int
    input: str
    counted: bool  # whether it has a place in the group node's widgets_values
    extra_values: int = 0  # the values stored after it: upload button, control_after_generate, combo filter
    added_rank: int | None = None  # the n-th widget Inkwash adds to a ComfyUI node (options "inkwash_added")
    default: Any = None  # its declared default


@dataclass
class GroupLayout:
    widgets: dict[str, GroupWidget] = field(default_factory=dict)  # by the group node's widget name, in order
    inputs: dict[tuple[int, int], str] = field(default_factory=dict)  # (inner index, slot) -> group input name
    outputs: list[tuple[int, int]] = field(default_factory=list)  # group output slot -> (inner index, slot)
    links: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # inner target -> inner origin

    def widget_values(self, values: Any) -> dict[str, Any]:
        """The group node's widget values by widget name, from its positional `widgets_values`."""
        if isinstance(values, Mapping):
            return {name: values[name] for name in self.widgets if name in values}
        named: dict[str, Any] = {}
        position = 0
        saved = self._saved_widgets(values)
        for name, widget in saved:
            if isinstance(values, list) and position < len(values):
                named[name] = values[position]
            position += 1 + widget.extra_values
        for name, widget in self.widgets.items():  # added widgets the group has no value for: their
            if widget.added_rank is not None and name not in named:  # defaults, as the editor fills them
                named[name] = widget.default
        return named

    def _saved_widgets(self, values: Any) -> list[tuple[str, GroupWidget]]:
        """The widgets that have a place in `values`. A group saved by ComfyUI, or by an older Inkwash, lacks
        the widgets Inkwash adds to ComfyUI's nodes (or the later ones of them): the layout whose length
        the values have is the one they were saved with."""
        counted = [(name, w) for name, w in self.widgets.items() if w.counted]
        ranks = [w.added_rank for _, w in counted if w.added_rank is not None]
        if not isinstance(values, list) or not ranks:
            return counted
        for keep in range(max(ranks) + 1, -1, -1):  # every added widget, then one fewer per node, ...
            layout = [(n, w) for n, w in counted if w.added_rank is None or w.added_rank < keep]
            if sum(1 + w.extra_values for _, w in layout) == len(values):
                return layout
        return counted


def _config(definition: Mapping, index: int, section: str, key: Any) -> Mapping:
    per_node = (definition.get("config") or {})
    entry = per_node.get(str(index)) or per_node.get(index) or {}
    found = (entry.get(section) or {}) if isinstance(entry, Mapping) else {}
    value = found.get(str(key), found.get(key)) if isinstance(found, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _extra_values(name: str, kind: str, options: Mapping, forced: bool = False) -> int:
    """How many values the editor stores after this widget: an image upload button's, or a
    control_after_generate combo's, and on a combo a filter text's too."""
    upload = 1 if kind == "COMBO" and options.get("image_upload") else 0
    if not (forced and kind in ("INT", "FLOAT", "COMBO")) and not has_seed_control(name, kind, options):
        return upload
    return upload + (2 if kind == "COMBO" else 1)


class _Builder:
    """The frontend's GroupNodeConfig.registerType, reduced to what conversion needs."""

    def __init__(self, definition: Mapping, object_info: Mapping[str, Mapping]):
        self.definition = definition
        self.object_info = object_info
        self.nodes = [n if isinstance(n, Mapping) else {} for n in definition.get("nodes") or []]
        self.layout = GroupLayout()
        self.links_from: dict[int, dict[int, list]] = {}
        self.links_to: dict[int, dict[int, list]] = {}
        for link in definition.get("links") or []:
            if not isinstance(link, (list, tuple)) or len(link) < 4 or any(v is None for v in link[:4]):
                continue  # a link from outside the group: the group node's inputs stand for it
            origin, origin_slot, target, target_slot = (int(v) for v in link[:4])
            self.links_from.setdefault(origin, {}).setdefault(origin_slot, []).append(link)
            self.links_to.setdefault(target, {})[target_slot] = link
            self.layout.links[(target, target_slot)] = (origin, origin_slot)
        self.external: dict[int, dict[int, Any]] = {}
        for entry in definition.get("external") or []:
            if isinstance(entry, (list, tuple)) and len(entry) >= 3 and entry[2] is not None:
                self.external.setdefault(int(entry[0]), {})[int(entry[1])] = entry[2]
        self.seen: dict[str, int] = {}
        self.primitive_targets: set[int] = set()  # primitives that feed a widget get a control value

    def build(self) -> GroupLayout:
        converted_later = []
        for index, node in enumerate(self.nodes):
            spec = self._node_spec(index, node)
            if spec is None:
                continue
            inputs, outputs = spec
            if inputs:
                converted_later.append(self._inputs(index, node, inputs))
            self._outputs(index, outputs)
        for process in converted_later:
            process()
        for name, widget in self.layout.widgets.items():
            if widget.index in self.primitive_targets and self.nodes[widget.index].get("type") == PRIMITIVE:
                kind = self._primitive_kind(widget.index)
                widget.extra_values = _extra_values(name, kind, {}, forced=True)
        return self.layout

    # -- the inputs and outputs each inner node brings ----------------------------------------------

    def _node_spec(self, index: int, node: Mapping) -> tuple[list, list] | None:
        kind = node.get("type")
        info = self.object_info.get(kind) if isinstance(kind, str) else None
        if info is not None:
            return declared_inputs(info), list(info.get("output") or [])
        linked_out = self.links_from.get(index)
        if kind == PRIMITIVE:
            if not linked_out:
                return None  # a primitive that feeds nothing is left out
            value_kind = self._primitive_kind(index)
            return [("value", value_kind, {})], [value_kind]
        if kind == REROUTE:
            if self.links_to.get(index) and linked_out and not self.external.get(index, {}).get(0):
                return None  # a reroute used inside the group only
            kind = self._reroute_kind(index)
            return [(kind, kind, {"forceInput": True})], [kind]
        return None  # notes, and node types /object_info does not describe

    def _primitive_kind(self, index: int) -> str:
        links = self.links_from.get(index, {}).get(0) or []
        kind = links[0][5] if links and len(links[0]) > 5 else None
        return "COMBO" if kind == "COMBO" or isinstance(kind, list) else str(kind)

    def _reroute_kind(self, index: int) -> str:
        for link in self.links_from.get(index, {}).get(0) or []:
            inputs = self.nodes[int(link[2])].get("inputs") or [] if int(link[2]) < len(self.nodes) else []
            slot = int(link[3])
            if slot < len(inputs) and inputs[slot].get("type") not in (None, "*"):
                return str(inputs[slot]["type"])
        for link in (self.definition.get("links") or []):
            if isinstance(link, (list, tuple)) and len(link) > 5 and link[2] == index and link[5] is not None:
                return str(link[5])
        return str(self.external.get(index, {}).get(0) or "*")

    def _name(self, index: int, node: Mapping, input_name: str) -> tuple[str, Mapping]:
        """The group node's name for an inner input (the frontend's getInputConfig)."""
        custom = _config(self.definition, index, "input", input_name)
        label = next((slot.get("label") for slot in node.get("inputs") or []
                      if isinstance(slot, Mapping) and slot.get("name") == input_name), None)
        name = custom.get("name") if custom.get("name") is not None else label if label is not None else input_name
        key = name
        if (node.get("type") == PRIMITIVE and node.get("title")) or name in self.seen:
            prefix = f"{node['title'] if node.get('title') is not None else node.get('type')} "
            key = name = f"{prefix}{input_name}"
            if name in self.seen:
                name = f"{prefix}{self.seen[name]} {input_name}"
        self.seen[key] = self.seen.get(key, 1) + 1
        return name, custom

    def _inputs(self, index: int, node: Mapping, inputs: list):
        slots: list[str] = []
        converted: dict[int, tuple[str, str, dict]] = {}
        own_inputs = [s for s in node.get("inputs") or [] if isinstance(s, Mapping)]
        for name, kind, options in inputs:
            if kind not in WIDGET_TYPES:
                slots.append(name)
                continue
            position = next((i for i, s in enumerate(own_inputs)
                             if s.get("name") == name and (s.get("widget") or {}).get("name") == name), -1)
            if position > -1:  # a widget converted to an input: placed after every inner node's own
                converted[position] = (name, kind, options)
                continue
            group_name, _ = self._name(index, node, name)
            self._add_widget(group_name, index, name, kind, options)
        linked = self.links_to.get(index, {})
        for slot, name in enumerate(slots):
            if slot in linked:
                self._note_primitive(linked[slot])
                continue
            group_name, custom = self._name(index, node, name)
            if custom.get("visible") is False:
                continue
            self.layout.inputs[(index, slot)] = group_name

        def converted_widgets():
            # the frontend sorts the positions as text, as JavaScript's sort() does
            for offset, position in enumerate(sorted(converted, key=str)):
                name, kind, options = converted[position]
                slot = len(slots) + offset
                if slot in linked:
                    self._note_primitive(linked[slot])
                    continue
                group_name, _ = self._name(index, node, name)
                self._add_widget(group_name, index, name, kind, options)
                self.layout.inputs[(index, slot)] = group_name
        return converted_widgets

    def _add_widget(self, group_name: str, index: int, name: str, kind: str, options: Mapping) -> None:
        rank = None
        if options.get("inkwash_added"):
            rank = sum(1 for w in self.layout.widgets.values() if w.index == index and w.added_rank is not None)
        self.layout.widgets[group_name] = GroupWidget(index, name, has_widget(kind, options),
                                                      _extra_values(name, kind, options), rank, options.get("default"))

    def _note_primitive(self, link: list) -> None:
        origin = int(link[0])
        if origin < len(self.nodes) and self.nodes[origin].get("type") == PRIMITIVE:
            self.primitive_targets.add(origin)

    def _outputs(self, index: int, outputs: list) -> None:
        for slot in range(len(outputs)):
            linked_inside = bool(self.links_from.get(index, {}).get(slot))
            linked_outside = bool(self.external.get(index, {}).get(slot))
            visible = _config(self.definition, index, "output", slot).get("visible")
            if visible is None:
                visible = not linked_inside or linked_outside
            if visible:
                self.layout.outputs.append((index, slot))


def group_layout(definition: Mapping, object_info: Mapping[str, Mapping]) -> GroupLayout:
    return _Builder(definition, object_info).build()
