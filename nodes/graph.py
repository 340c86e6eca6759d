"""Workflows in ComfyUI's API format: parsing, validation and ordering. Imports no torch.

A workflow is `{node_id: {"class_type": str, "inputs": {name: value | [src_id, output_index]}}}`. A
two-element list whose first item is a string (or int) node id and second an int is a link; a literal
list value is written `{"__value__": [...]}` as in ComfyUI.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .declare import ANY, Input, InputError, Node


MAX_NODES = 10_000  # per workflow: far past any real one, and validation stays well under a second


class WorkflowError(ValueError):
    """The workflow as a whole cannot be read (not JSON, not an object, no outputs)."""

    def __init__(self, kind: str, message: str, details: str = ""):
        super().__init__(message)
        self.kind = kind
        self.details = details

    def as_dict(self) -> dict:
        return {"type": self.kind, "message": str(self), "details": self.details, "extra_info": {}}


@dataclass(frozen=True)
class Link:
    source: str
    index: int


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


@dataclass
class NodeSpec:
    id: str
    class_type: str
    links: dict[str, Link] = field(default_factory=dict)
    literals: dict[str, Any] = field(default_factory=dict)
    title: str | None = None


@dataclass
class Workflow:
    nodes: dict[str, NodeSpec]
    raw: dict


def parse(source: str | bytes | Mapping) -> Workflow:
    """Read API-format JSON (text or an already-decoded object) into NodeSpecs."""
    if isinstance(source, (str, bytes)):
        try:
            source = json.loads(source)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WorkflowError("invalid_prompt", "Workflow is not valid JSON", str(exc)) from None
    if not isinstance(source, Mapping):
        raise WorkflowError("invalid_prompt", "Workflow must be a JSON object of nodes keyed by id",
                            f"got {type(source).__name__}")
    if not source:
        raise WorkflowError("no_prompt", "Workflow has no nodes")
    if len(source) > MAX_NODES:
        raise WorkflowError("invalid_prompt", f"Workflow has {len(source)} nodes; at most {MAX_NODES} are allowed",
                            "split it into smaller workflows")
    if "nodes" in source and "links" in source and isinstance(source.get("nodes"), list):
        raise WorkflowError("invalid_prompt", "This is a UI-format workflow; export it in API format",
                            "expected {node_id: {class_type, inputs}}")
    nodes: dict[str, NodeSpec] = {}
    for node_id, body in source.items():
        node_id = str(node_id)
        if not isinstance(body, Mapping) or not isinstance(body.get("class_type"), str):
            raise WorkflowError("invalid_prompt", f"Node {node_id} has no class_type",
                                "every node must be an object with a string class_type")
        raw_inputs = body.get("inputs", {})
        if not isinstance(raw_inputs, Mapping):
            raise WorkflowError("invalid_prompt", f"Node {node_id}: inputs must be an object")
        spec = NodeSpec(node_id, body["class_type"], title=(body.get("_meta") or {}).get("title")
                        if isinstance(body.get("_meta"), Mapping) else None)
        for name, value in raw_inputs.items():
            if is_link(value):
                spec.links[name] = Link(str(value[0]), value[1])
            elif isinstance(value, Mapping) and "__value__" in value:
                spec.literals[name] = value["__value__"]
            else:
                spec.literals[name] = value
        nodes[node_id] = spec
    return Workflow(nodes, dict(source))


@dataclass
class Validation:
    workflow: Workflow | None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, dict] = field(default_factory=dict)
    error: dict | None = None
    # Coerced literal inputs per node, ready to pass to `run`.
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.node_errors

    def response(self) -> dict:
        """The body ComfyUI returns for POST /prompt when validation fails."""
        return {"error": self.error, "node_errors": self.node_errors}


def _error(kind: str, message: str, details: str = "", **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _link_type_ok(produced: str, expected: Input) -> bool:
    if ANY in (produced, expected.type):
        return True
    if expected.type == "COMBO":  # a combo fed by a node that outputs the same list of strings
        return produced in ("COMBO", "STRING")
    return produced == expected.type


def validate(source: str | bytes | Mapping | Workflow, registry: Mapping[str, type[Node]]) -> Validation:
    """Check a workflow against the node declarations; report every problem at once."""
    try:
        workflow = source if isinstance(source, Workflow) else parse(source)
    except WorkflowError as exc:
        return Validation(None, error=exc.as_dict())
    result = Validation(workflow)
    errors: dict[str, list[dict]] = {}

    def add(node_id: str, err: dict) -> None:
        errors.setdefault(node_id, []).append(err)

    for node in workflow.nodes.values():
        cls = registry.get(node.class_type)
        if cls is None:
            add(node.id, _error("missing_node_type", f"Node type {node.class_type!r} is not known",
                                f"node {node.id} uses unknown class_type {node.class_type!r}",
                                node_id=node.id, class_type=node.class_type))
            continue
        values: dict[str, Any] = {}
        declared = {i.name: i for i in cls.inputs}
        for decl in cls.inputs:
            info = {"input_name": decl.name, "input_config": decl.schema()}
            if decl.name in node.links:
                link = node.links[decl.name]
                source_node = workflow.nodes.get(link.source)
                if source_node is None:
                    add(node.id, _error("bad_linked_input", f"{decl.name}: linked node {link.source} does not exist",
                                        str(link.source), **info, received_value=[link.source, link.index]))
                    continue
                source_cls = registry.get(source_node.class_type)
                if source_cls is None:
                    continue  # already reported on the source node
                if not 0 <= link.index < len(source_cls.outputs):
                    add(node.id, _error("bad_linked_input",
                                        f"{decl.name}: node {link.source} ({source_node.class_type}) has no output "
                                        f"{link.index}", f"it has {len(source_cls.outputs)}",
                                        **info, received_value=[link.source, link.index]))
                    continue
                produced = source_cls.outputs[link.index].type
                if not _link_type_ok(produced, decl):
                    add(node.id, _error("return_type_mismatch",
                                        f"{decl.name}: expects {decl.type}, node {link.source} output "
                                        f"{link.index} gives {produced}",
                                        f"{produced} != {decl.type}", **info, received_type=produced,
                                        linked_node=[link.source, link.index]))
            elif decl.name in node.literals:
                try:
                    values[decl.name] = decl.coerce(node.literals[decl.name])
                except InputError as exc:
                    add(node.id, _error(exc.kind, f"{decl.name}: {exc}", f"{decl.name}: {exc}", **info,
                                        received_value=_shown(node.literals[decl.name])))
            elif not decl.optional:
                add(node.id, _error("required_input_missing", f"Required input is missing: {decl.name}",
                                    decl.name, **info))
        for name in node.links.keys() - declared.keys():
            add(node.id, _error("bad_linked_input", f"{name}: {node.class_type} has no input named {name}", name,
                                input_name=name))
        if node.id not in errors:
            message = cls.check(**values)
            if message:
                add(node.id, _error("custom_validation_failed", message, message))
        result.values[node.id] = values

    cycle = find_cycle(workflow)
    for node_id in cycle:
        add(node_id, _error("dependency_cycle", "Node is part of a dependency cycle",
                            " -> ".join(cycle + cycle[:1])))

    result.outputs = [n.id for n in workflow.nodes.values()
                      if (cls := registry.get(n.class_type)) is not None and cls.output_node]
    needed_by = dependent_outputs(workflow, result.outputs, errors) if errors else {}
    for node_id, errs in errors.items():
        result.node_errors[node_id] = {"errors": errs, "dependent_outputs": needed_by[node_id],
                                       "class_type": workflow.nodes[node_id].class_type}
    if result.node_errors:
        result.error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                              "; ".join(f"{nid}: {e['errors'][0]['message']}" for nid, e in result.node_errors.items()))
    elif not result.outputs:
        result.error = _error("prompt_no_outputs", "Prompt has no outputs",
                              "add an output node such as SaveImage or PreviewImage")
    return result


def _shown(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 200 else text[:200] + "..."


def ancestors(workflow: Workflow, roots: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in workflow.nodes:
            continue
        seen.add(node_id)
        stack.extend(link.source for link in workflow.nodes[node_id].links.values())
    return seen


def find_cycle(workflow: Workflow) -> list[str]:
    """The ids of nodes that sit on a dependency cycle ([] when there is none).

    Kahn's algorithm removes every node whose inputs can all be produced; what is left is on a cycle or
    downstream of one, and trimming nodes that feed nothing left leaves the cycles themselves.
    Iterative, so a hostile 100,000-node chain cannot exhaust the stack."""
    deps = {nid: {l.source for l in n.links.values() if l.source in workflow.nodes}
            for nid, n in workflow.nodes.items()}
    users: dict[str, set[str]] = {nid: set() for nid in deps}
    for nid, sources in deps.items():
        for src in sources:
            users[src].add(nid)
    waiting = {nid: len(sources) for nid, sources in deps.items()}
    ready = [nid for nid, count in waiting.items() if count == 0]
    while ready:
        for user in users[ready.pop()]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    left = {nid for nid, count in waiting.items() if count > 0}
    # the same from the other end, among what is left: drop nodes whose users have all been dropped
    feeding = {nid: len(users[nid] & left) for nid in left}
    sinks = [nid for nid, count in feeding.items() if count == 0]
    while sinks:
        nid = sinks.pop()
        left.discard(nid)
        for src in deps[nid]:
            if src in left:
                feeding[src] -= 1
                if feeding[src] == 0:
                    sinks.append(src)
    return [nid for nid in workflow.nodes if nid in left]


def dependent_outputs(workflow: Workflow, outputs: list[str], node_ids) -> dict[str, list[str]]:
    """For each of `node_ids`, the outputs that need it (itself included), in `outputs` order. Linear in
    nodes + links: strongly connected components (iterative Tarjan, cycles allowed) come out
    downstream-first, so each one's set of outputs (a bit mask) is its own plus its users'."""
    users: dict[str, list[str]] = {nid: [] for nid in workflow.nodes}
    for nid, node in workflow.nodes.items():
        for link in node.links.values():
            if link.source in users:
                users[link.source].append(nid)
    bit = {out: 1 << position for position, out in enumerate(outputs)}
    reach: dict[str, int] = {}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in workflow.nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            nid, child = work.pop()
            if child == 0:
                index[nid] = low[nid] = len(index)
                stack.append(nid)
                on_stack.add(nid)
            if child < len(users[nid]):
                work.append((nid, child + 1))
                user = users[nid][child]
                if user not in index:
                    work.append((user, 0))
                elif user in on_stack:
                    low[nid] = min(low[nid], index[user])
                continue
            for user in users[nid]:  # done with nid's users: fold in the lowest index they reach
                if user in on_stack:
                    low[nid] = min(low[nid], low[user])
            if low[nid] == index[nid]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == nid:
                        break
                mask = 0
                for member in component:
                    mask |= bit.get(member, 0)
                    for user in users[member]:
                        mask |= reach.get(user, 0)
                for member in component:
                    reach[member] = mask
    found = {}
    for nid in node_ids:
        bits = bin(reach.get(nid, 0))[:1:-1]  # bit i is character i
        found[nid] = [out for position, out in enumerate(outputs[:len(bits)]) if bits[position] == "1"]
    return found


def execution_order(workflow: Workflow, outputs: list[str]) -> list[str]:
    """Output nodes and their ancestors, each after everything it links from (depth-first, stable).
    The workflow must be free of cycles (validate() checks)."""
    order: list[str] = []
    placed: set[str] = set()
    for out in outputs:
        stack = [(out, False)]
        while stack:
            node_id, expanded = stack.pop()
            if expanded:
                order.append(node_id)
                continue
            if node_id in placed:
                continue
            placed.add(node_id)
            stack.append((node_id, True))
            links = workflow.nodes[node_id].links
            stack.extend((links[name].source, False) for name in sorted(links, reverse=True)
                         if links[name].source not in placed)
    return order
