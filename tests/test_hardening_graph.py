"""Hostile workflows: validation is linear in nodes + links, and a workflow has a node cap with a clear
error. (Validation speed is measured by bench/bench_validation.py.)"""
from inkwash.nodes import graph


def chain(length: int, outputs: int = 0, self_loop: bool = True) -> dict:
    """ImageScaleBy nodes in a chain (the first linked to itself), with PreviewImage outputs at its end."""
    def scale(source: str) -> dict:
        return {"class_type": "ImageScaleBy",
                "inputs": {"image": [source, 0], "upscale_method": "nearest-exact", "scale_by": 1.0}}

    workflow = {"0": scale("0" if self_loop else "x")}
    workflow.update({str(i): scale(str(i - 1)) for i in range(1, length)})
    workflow.update({f"out{j}": {"class_type": "PreviewImage", "inputs": {"images": [str(length - 1 - j), 0]}}
                     for j in range(outputs)})
    return workflow


class CountingNodes(dict):
    """A workflow's node table that counts lookups: the work validation does per node."""

    lookups = 0

    def __getitem__(self, key):
        CountingNodes.lookups += 1
        return super().__getitem__(key)

    def get(self, key, default=None):
        CountingNodes.lookups += 1
        return super().get(key, default)


def counted_validation(workflow: dict, registry) -> tuple[graph.Validation, int]:
    parsed = graph.parse(workflow)
    CountingNodes.lookups = 0
    validation = graph.validate(graph.Workflow(CountingNodes(parsed.nodes), parsed.raw), registry)
    return validation, CountingNodes.lookups


def test_outputs_over_a_chain_cost_linear_work(registry):
    # 600 outputs over a 600-node chain whose first node is broken: each output depends on it
    validation, lookups = counted_validation(chain(600, outputs=600), registry)
    assert validation.node_errors["0"]["dependent_outputs"] == [f"out{j}" for j in range(600)]
    assert lookups <= 10 * 1200  # per-output ancestor sets were 600 x 600


def test_a_self_loop_before_a_long_chain_is_reported_on_the_loop_only(registry):
    validation = graph.validate(chain(9_000, outputs=1), registry)
    assert set(validation.node_errors) == {"0"}
    assert validation.node_errors["0"]["errors"][0]["type"] == "dependency_cycle"
    assert validation.node_errors["0"]["dependent_outputs"] == ["out0"]


def test_dependent_outputs_follow_cycles_and_branches(registry):
    workflow = chain(4, outputs=2, self_loop=False)  # 0 -> 1 -> 2 -> 3 -> out0; 2 -> out1
    workflow["0"]["inputs"]["image"] = ["2", 0]  # a cycle 0 -> 1 -> 2 -> 0
    workflow["9"] = {"class_type": "ImageScaleBy", "inputs": {"image": ["3", 0], "scale_by": 1.0,
                                                              "upscale_method": "bogus"}}
    workflow["out9"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
    validation = graph.validate(workflow, registry)
    assert sorted(validation.node_errors) == ["0", "1", "2", "9"]
    assert validation.node_errors["1"]["dependent_outputs"] == ["out0", "out1", "out9"]
    assert validation.node_errors["9"]["dependent_outputs"] == ["out9"]


def test_more_nodes_than_the_cap_is_a_clear_error(registry):
    validation = graph.validate(chain(graph.MAX_NODES + 1, self_loop=False), registry)
    assert validation.error["type"] == "invalid_prompt"
    assert f"at most {graph.MAX_NODES}" in validation.error["message"]
    assert not validation.node_errors
