"""Executor semantics, specified with tiny pure-Python nodes (no torch)."""
import json
import threading

import pytest

from inkwash.nodes.declare import Boolean, Combo, Float, Input, Int, Node, Output, Result, String
from inkwash.nodes.executor import Executor

RUNS: list[str] = []  # class names in the order they ran


class Number(Node):
    inputs = [Int("value", default=1, min=0, max=100)]
    outputs = [Output("INT")]

    def run(self, value):
        RUNS.append("Number")
        return (value,)


class Add(Node):
    inputs = [Int("a", default=0, min=-1000, max=1000), Int("b", default=0, min=-1000, max=1000)]
    outputs = [Output("INT")]

    def run(self, a, b):
        RUNS.append("Add")
        return (a + b,)


class Scale(Node):
    inputs = [Input("x", "INT"), Float("factor", default=1.0, min=0.0, max=10.0)]
    outputs = [Output("FLOAT")]

    def run(self, x, factor):
        RUNS.append("Scale")
        return (x * factor,)


class Slow(Node):
    """Reports progress over `steps` steps; the test interrupts it half way."""

    inputs = [Input("x", "INT"), Int("steps", default=10, min=1, max=100)]
    outputs = [Output("INT")]
    started = threading.Event()

    def run(self, x, steps):
        RUNS.append("Slow")
        for step in range(1, steps + 1):
            if step == 3:
                Slow.started.set()
                Slow.release.wait(5)
            self.ctx.progress(step, steps)
        return (x,)


class Show(Node):
    inputs = [Input("value", "*"), String("label", default="out", optional=True),
              Boolean("loud", default=False, optional=True),
              Combo("style", choices=["plain", "fancy"], default="plain", optional=True)]
    output_node = True

    def run(self, value, label, loud, style):
        RUNS.append("Show")
        return Result(ui={"text": [f"{label}={value}"]})


class Fails(Node):
    inputs = [Input("x", "INT")]
    outputs = [Output("INT")]

    def run(self, x):
        RUNS.append("Fails")
        raise RuntimeError("boom")


class FileValue(Node):
    """Stands for LoadImage: re-runs when the content it reads changes."""

    inputs = [String("path")]
    outputs = [Output("INT")]

    @classmethod
    def fingerprint(cls, path):
        return open(path).read()

    def run(self, path):
        RUNS.append("FileValue")
        return (int(open(path).read()),)


class Picky(Node):
    inputs = [Int("value", default=0, min=-10, max=10)]
    outputs = [Output("INT")]

    @classmethod
    def check(cls, value):
        return "value must be even" if value % 2 else None

    def run(self, value):
        return (value,)


REGISTRY = {c.__name__: c for c in (Number, Add, Scale, Slow, Show, Fails, FileValue, Picky)}


@pytest.fixture(autouse=True)
def reset_runs():
    RUNS.clear()
    Slow.started = threading.Event()
    Slow.release = threading.Event()
    Slow.release.set()


def chain(value=2, factor=3.0, label="out"):
    """Number -> Add(+1) -> Scale -> Show."""
    return {
        "1": {"class_type": "Number", "inputs": {"value": value}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Scale", "inputs": {"x": ["2", 0], "factor": factor}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0], "label": label}},
    }


def run(executor, workflow):
    events = []
    result = executor.execute(workflow, on_event=lambda name, data: events.append((name, data)))
    return result, events


def test_runs_in_topological_order_and_reports_events():
    result, events = run(Executor(REGISTRY), chain())
    assert result.status == "success"
    assert RUNS == ["Number", "Add", "Scale", "Show"]
    assert result.outputs == {"4": {"text": ["out=9.0"]}}
    names = [name for name, _ in events]
    assert names[0:2] == ["execution_start", "execution_cached"]
    assert [d["node"] for n, d in events if n == "executing"] == ["1", "2", "3", "4", None]
    assert ("executed", {"node": "4", "display_node": "4", "output": {"text": ["out=9.0"]},
                         "prompt_id": result.prompt_id}) in events
    assert names[-1] == "execution_success"
    assert all(d["prompt_id"] == result.prompt_id for _, d in events)


def test_only_output_nodes_and_their_ancestors_run():
    workflow = chain()
    workflow["9"] = {"class_type": "Number", "inputs": {"value": 50}}  # feeds nothing
    result, _ = run(Executor(REGISTRY), workflow)
    assert result.status == "success" and "9" not in result.executed
    assert RUNS.count("Number") == 1


def test_identical_workflow_runs_nothing_the_second_time():
    executor = Executor(REGISTRY)
    run(executor, chain())
    RUNS.clear()
    result, events = run(executor, chain())
    assert RUNS == [] and result.executed == []
    cached = next(d for n, d in events if n == "execution_cached")
    assert sorted(cached["nodes"]) == ["1", "2", "3", "4"]
    # the output node's ui is re-sent from the cache
    assert any(n == "executed" and d["node"] == "4" for n, d in events)


def test_changing_one_input_reruns_that_node_and_what_is_downstream():
    executor = Executor(REGISTRY)
    run(executor, chain(factor=3.0))
    RUNS.clear()
    result, _ = run(executor, chain(factor=4.0))
    assert RUNS == ["Scale", "Show"]
    assert result.outputs["4"] == {"text": ["out=12.0"]}
    RUNS.clear()
    run(executor, chain(factor=4.0, label="other"))  # only the output node changed
    assert RUNS == ["Show"]


def test_cache_key_ignores_node_ids():
    executor = Executor(REGISTRY)
    run(executor, chain())
    renumbered = {str(int(k) + 10): v for k, v in json.loads(json.dumps(chain())).items()}
    for node in renumbered.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = [str(int(value[0]) + 10), value[1]]
    RUNS.clear()
    result, _ = run(executor, renumbered)
    assert RUNS == [] and result.status == "success"


def test_fingerprint_reruns_when_file_content_changes(tmp_path):
    path = tmp_path / "value.txt"
    path.write_text("5")
    workflow = {"1": {"class_type": "FileValue", "inputs": {"path": str(path)}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    executor = Executor(REGISTRY)
    run(executor, workflow)
    RUNS.clear()
    run(executor, workflow)
    assert RUNS == []
    path.write_text("6")
    result, _ = run(executor, workflow)
    assert RUNS == ["FileValue", "Show"] and result.outputs["2"] == {"text": ["out=6"]}


def test_cache_keeps_only_what_the_latest_workflow_uses():
    executor = Executor(REGISTRY)
    run(executor, chain(value=1))
    assert executor.cache_size == 4
    run(executor, chain(value=2))
    assert executor.cache_size == 4  # the value=1 results were released
    RUNS.clear()
    run(executor, chain(value=1))
    assert RUNS == ["Number", "Add", "Scale", "Show"]


def test_optional_defaults_and_coercion():
    workflow = {"1": {"class_type": "Number", "inputs": {"value": "7"}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0], "loud": "true"}}}
    result, _ = run(Executor(REGISTRY), workflow)
    assert result.status == "success" and result.outputs["2"] == {"text": ["out=7"]}


# -- validation ---------------------------------------------------------------------------------------

def errors_of(workflow, node_id):
    validation = Executor(REGISTRY).validate(workflow)
    assert not validation.ok
    return [(e["type"], e["extra_info"].get("input_name")) for e in validation.node_errors[node_id]["errors"]]


def test_every_problem_is_reported_at_once_per_node():
    workflow = {
        "1": {"class_type": "Number", "inputs": {"value": 500}},  # above max
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},  # b missing
        "3": {"class_type": "Nope", "inputs": {}},  # unknown
        "4": {"class_type": "Show", "inputs": {"value": ["2", 0], "style": "loud"}},  # not in choices
    }
    validation = Executor(REGISTRY).validate(workflow)
    assert not validation.ok
    assert set(validation.node_errors) == {"1", "2", "3", "4"}
    assert validation.error["type"] == "prompt_outputs_failed_validation"
    assert validation.node_errors["3"]["errors"][0]["type"] == "missing_node_type"
    assert "Nope" in validation.node_errors["3"]["errors"][0]["message"]
    assert validation.node_errors["2"]["class_type"] == "Add"
    assert validation.node_errors["1"]["dependent_outputs"] == ["4"]
    assert errors_of(workflow, "1") == [("value_bigger_than_max", "value")]
    assert errors_of(workflow, "2") == [("required_input_missing", "b")]
    assert errors_of(workflow, "4") == [("value_not_in_list", "style")]


@pytest.mark.parametrize("inputs, expected", [
    ({"value": -1}, ("value_smaller_than_min", "value")),
    ({"value": "seven"}, ("invalid_input_type", "value")),
    ({"value": 2.5}, ("invalid_input_type", "value")),
    ({"value": True}, ("invalid_input_type", "value")),
    ({"value": {"a": 1}}, ("invalid_input_type", "value")),
])
def test_literal_value_errors(inputs, expected):
    workflow = {"1": {"class_type": "Number", "inputs": inputs},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert errors_of(workflow, "1") == [expected]


def test_link_errors():
    base = {"1": {"class_type": "Number", "inputs": {"value": 1}}}
    missing_node = {**base, "2": {"class_type": "Scale", "inputs": {"x": ["9", 0], "factor": 1}},
                    "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert errors_of(missing_node, "2") == [("bad_linked_input", "x")]
    bad_index = {**base, "2": {"class_type": "Scale", "inputs": {"x": ["1", 3], "factor": 1}},
                 "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert errors_of(bad_index, "2") == [("bad_linked_input", "x")]
    wrong_type = {**base, "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 1}},
                  "3": {"class_type": "Scale", "inputs": {"x": ["2", 0], "factor": 1}},  # FLOAT into INT
                  "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    assert errors_of(wrong_type, "3") == [("return_type_mismatch", "x")]
    literal_for_link = {"2": {"class_type": "Scale", "inputs": {"x": 5, "factor": 1}},
                        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert errors_of(literal_for_link, "2") == [("invalid_input_type", "x")]


def test_widget_input_may_be_linked_from_same_type():
    workflow = {"1": {"class_type": "Number", "inputs": {"value": 4}},
                "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    result, _ = run(Executor(REGISTRY), workflow)
    assert result.outputs["3"] == {"text": ["out=8"]}


def test_cycle_is_reported():
    workflow = {"1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
                "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    validation = Executor(REGISTRY).validate(workflow)
    assert {"1", "2"} <= set(validation.node_errors)
    assert all(any(e["type"] == "dependency_cycle" for e in validation.node_errors[n]["errors"]) for n in "12")


def test_custom_check():
    workflow = {"1": {"class_type": "Picky", "inputs": {"value": 3}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert errors_of(workflow, "1") == [("custom_validation_failed", None)]


@pytest.mark.parametrize("source, kind", [
    ("{not json", "invalid_prompt"),
    ("[1, 2]", "invalid_prompt"),
    ("{}", "no_prompt"),
    ({"1": {"inputs": {}}}, "invalid_prompt"),
    ({"1": {"class_type": "Number", "inputs": [1]}}, "invalid_prompt"),
    ({"nodes": [], "links": []}, "invalid_prompt"),
    ({"1": {"class_type": "Number", "inputs": {"value": 1}}}, "prompt_no_outputs"),
])
def test_malformed_workflows_get_one_clear_error(source, kind):
    validation = Executor(REGISTRY).validate(source)
    assert not validation.ok and validation.error["type"] == kind and validation.error["message"]
    result = Executor(REGISTRY).execute(source)
    assert result.status == "invalid"


# -- failures and interrupts --------------------------------------------------------------------------

def test_node_exception_reports_execution_error_and_executor_stays_usable():
    executor = Executor(REGISTRY)
    workflow = {"1": {"class_type": "Number", "inputs": {"value": 1}},
                "2": {"class_type": "Fails", "inputs": {"x": ["1", 0]}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    result, events = run(executor, workflow)
    assert result.status == "error"
    error = next(d for n, d in events if n == "execution_error")
    assert error["node_id"] == "2" and error["node_type"] == "Fails" and error["exception_message"] == "boom"
    assert error["executed"] == ["1"]
    RUNS.clear()
    result, _ = run(executor, chain())
    assert result.status == "success"


def test_interrupt_between_steps_and_executor_stays_usable():
    executor = Executor(REGISTRY)
    Slow.release = threading.Event()
    workflow = {"1": {"class_type": "Number", "inputs": {"value": 3}},
                "2": {"class_type": "Slow", "inputs": {"x": ["1", 0], "steps": 10}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    events = []
    thread = threading.Thread(target=lambda: events.append(
        executor.execute(workflow, on_event=lambda n, d: events.append((n, d)))))
    thread.start()
    assert Slow.started.wait(5)
    executor.interrupt()
    Slow.release.set()
    thread.join(5)
    result = events[-1]
    assert result.status == "interrupted"
    progress = [d["value"] for n, d in events[:-1] if n == "progress"]
    assert progress and max(progress) == 3  # stopped at the step after the interrupt
    interrupted = next(d for n, d in events[:-1] if n == "execution_interrupted")
    assert interrupted["node_id"] == "2" and interrupted["executed"] == ["1"]
    assert "Show" not in RUNS
    # usable afterwards; the finished Number node is still cached
    RUNS.clear()
    result, _ = run(executor, workflow)
    assert result.status == "success" and RUNS == ["Slow", "Show"]


def test_interrupt_between_nodes():
    executor = Executor(REGISTRY)

    def on_event(name, data):
        if name == "executed" or (name == "executing" and data["node"] == "2"):
            executor.interrupt()

    result = executor.execute(chain(), on_event=on_event)
    assert result.status == "interrupted"
    assert "Scale" not in RUNS


def test_object_info_derives_from_declaration():
    info = Show.object_info("Show")
    assert info["output_node"] is True
    assert info["input"]["optional"]["style"] == [["plain", "fancy"], {"default": "plain"}]
    assert info["input_order"] == {"required": ["value"], "optional": ["label", "loud", "style"]}
    number = Number.object_info("Number")["input"]["required"]["value"]
    assert number == ["INT", {"default": 1, "min": 0, "max": 100}]


def test_deep_graphs_do_not_exhaust_the_stack():
    workflow = {"0": {"class_type": "Number", "inputs": {"value": 0}}}
    for i in range(1, 5000):
        workflow[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 0 if i % 2 else 1}}
    workflow["out"] = {"class_type": "Show", "inputs": {"value": ["4999", 0]}}
    result = Executor(REGISTRY).execute(workflow)
    assert result.status == "success" and result.outputs["out"] == {"text": ["out=2499"]}
    workflow["0"] = {"class_type": "Add", "inputs": {"a": ["4999", 0], "b": 0}}  # close the loop
    validation = Executor(REGISTRY).validate(workflow)
    assert len([n for n, e in validation.node_errors.items()
                if e["errors"][0]["type"] == "dependency_cycle"]) == 5000
