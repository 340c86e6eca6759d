"""The job queue and the event hub, specified with tiny pure-Python nodes (no torch)."""
from __future__ import annotations

import asyncio
import logging
import json
import queue
import sqlite3
import threading
import time

import pytest
from inkwash.nodes.declare import Input, Int, Node, Output, Result, String
from inkwash.webui.events import EventHub, SubscriptionClosed
from inkwash.webui.jobs import DuplicateJobId, InvalidWorkflow, JobQueue

RUNS: list[str] = []  # labels of the Show nodes that ran, in order


class Number(Node):
    inputs = [Int("value", default=0, min=0, max=10**9)]
    outputs = [Output("INT")]

    def run(self, value):
        RUNS.append(f"Number={value}")
        return (value,)


class Show(Node):
    inputs = [Input("value", "INT"), String("label", default="out")]
    output_node = True

    def run(self, value, label):
        RUNS.append(label)
        return Result(ui={"text": [f"{label}={value}"]})


class Fails(Node):
    inputs = [Input("value", "INT")]
    outputs = [Output("INT")]

    def run(self, value):
        raise RuntimeError("boom")


class Gate(Node):
    """Holds the worker until the test opens the gate, reporting progress and honouring interrupts."""

    inputs = [Input("value", "INT"), Int("steps", default=1000, min=1, max=10**6)]
    outputs = [Output("INT")]
    entered: threading.Event
    opened: threading.Event

    def run(self, value, steps):
        Gate.entered.set()
        for step in range(1, steps + 1):
            if Gate.opened.is_set():
                break
            self.ctx.progress(step, steps, preview=object())  # not JSON: must never reach the store
            time.sleep(0.002)
        return (value,)


REGISTRY = {c.__name__: c for c in (Number, Show, Fails, Gate)}


@pytest.fixture(autouse=True)
def reset_nodes():
    RUNS.clear()
    Gate.entered, Gate.opened = threading.Event(), threading.Event()
    yield
    Gate.opened.set()  # never leave a worker stuck in a gate


@pytest.fixture
def make_queue(tmp_path):
    made: list[JobQueue] = []

    def make(hub: EventHub | None = None, db_path=None) -> JobQueue:
        job_queue = JobQueue(db_path or tmp_path / "jobs.sqlite3", REGISTRY, hub or EventHub())
        made.append(job_queue)
        return job_queue

    yield make
    for job_queue in made:
        job_queue.close()


def show(label: str, value: int = 1) -> dict:
    return {"1": {"class_type": "Number", "inputs": {"value": value}},
            "2": {"class_type": "Show", "inputs": {"value": ["1", 0], "label": label}}}


def gated(label: str = "gated") -> dict:
    return {"1": {"class_type": "Number", "inputs": {"value": 7}},
            "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "steps": 1000}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0], "label": label}}}


def failing() -> dict:
    return {"1": {"class_type": "Number", "inputs": {"value": 3}},
            "2": {"class_type": "Fails", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0], "label": "never"}}}


def start_gated(job_queue: JobQueue, **submit_args):
    job = job_queue.submit(gated(), **submit_args)
    job_queue.start()
    assert Gate.entered.wait(5)
    return job


# -- order -----------------------------------------------------------------------------------------

def test_jobs_run_in_number_order_and_front_jumps_ahead(make_queue):
    job_queue = make_queue()
    a, b, c = (job_queue.submit(show(label)) for label in "abc")
    urgent = job_queue.submit(show("urgent"), front=True)
    assert a.number < b.number < c.number and urgent.number < a.number
    assert [j.id for j in job_queue.pending()] == [urgent.id, a.id, b.id, c.id]
    assert job_queue.remaining() == 4

    job_queue.start()
    for job in (a, b, c, urgent):
        assert job_queue.wait(job.id, timeout=5).status == "success"
    assert [r for r in RUNS if not r.startswith("Number")] == ["urgent", "a", "b", "c"]
    assert job_queue.remaining() == 0 and job_queue.running() is None


def test_finished_job_is_a_comfyui_history_entry(make_queue):
    job_queue = make_queue()
    job_queue.start()
    submitted = job_queue.submit(show("x", 5), client_id="c1", extra={"extra_pnginfo": {"k": 1}, "source": "comfy"})
    job = job_queue.wait(submitted.id, timeout=5)
    assert job.status == "success" and job.completed and job.status_str == "success"
    assert job.outputs == {"2": {"text": ["x=5"]}}
    assert job.workflow == show("x", 5) and job.extra == {"extra_pnginfo": {"k": 1}, "source": "comfy"}
    assert job.output_nodes == ["2"] and job.client_id == "c1"
    assert [name for name, _ in job.messages] == ["execution_start", "execution_cached", "execution_success"]
    assert all(data["prompt_id"] == job.id for _, data in job.messages)
    assert job.created <= job.started <= job.finished
    assert [j.id for j in job_queue.history()] == [job.id]


def test_executor_is_reused_so_a_changed_input_reruns_only_downstream(make_queue):
    job_queue = make_queue()
    job_queue.start()
    job_queue.wait(job_queue.submit(show("first", 1)).id, timeout=5)
    job_queue.wait(job_queue.submit(show("second", 1)).id, timeout=5)
    assert RUNS == ["Number=1", "first", "second"]  # Number came from the cache


def test_free_memory_empties_the_cache_now_when_idle_and_after_the_running_job_otherwise(make_queue):
    job_queue = make_queue()
    job_queue.start()
    job_queue.wait(job_queue.submit(show("first", 1)).id, timeout=5)
    assert job_queue.executor.cache_size > 0
    job_queue.free_memory()
    assert job_queue.executor.cache_size == 0

    running = start_gated(job_queue)
    cached_while_running = job_queue.executor.cache_size
    job_queue.free_memory()  # the gated job still needs its inputs
    assert job_queue.executor.cache_size == cached_while_running > 0
    Gate.opened.set()
    assert job_queue.wait(running.id, timeout=5).status == "success"
    job_queue.wait(job_queue.submit(show("after", 7)).id, timeout=5)
    assert RUNS[-2:] == ["Number=7", "after"]  # the gated job's Number=7 was freed, so it ran again


# -- events ----------------------------------------------------------------------------------------

def test_events_go_to_the_jobs_client_and_status_is_broadcast(make_queue):
    hub = EventHub()
    alice, bob, everyone = hub.subscribe("alice"), hub.subscribe("bob"), hub.subscribe(None)
    job_queue = make_queue(hub)
    job_queue.start()
    job = job_queue.wait(job_queue.submit(show("for-alice"), client_id="alice").id, timeout=5)

    alice_events = alice.drain()
    names = [name for name, _ in alice_events]
    assert names[names.index("execution_start"):] == [
        "execution_start", "execution_cached", "executing", "executing", "executed",
        "execution_success", "status", "executing"]  # ComfyUI's order: `executing` null comes last
    assert all(d["prompt_id"] == job.id for n, d in alice_events if n != "status")
    assert ("executed", {"node": "2", "display_node": "2", "output": {"text": ["for-alice=1"]},
                         "prompt_id": job.id}) in alice_events

    bob_events = bob.drain()
    assert {name for name, _ in bob_events} == {"status"}  # bob sees the queue, not alice's job
    remaining = [d["status"]["exec_info"]["queue_remaining"] for _, d in bob_events]
    assert remaining == [0, 1, 0]  # on start, on submit, when the job finished
    assert [n for n, _ in everyone.drain()] == names  # alice also got the broadcasts


def test_progress_is_tracked_for_the_running_job(make_queue):
    hub = EventHub()
    sub = hub.subscribe("c")
    job_queue = make_queue(hub)
    assert job_queue.progress.job_id is None
    job = start_gated(job_queue, client_id="c")
    deadline = time.time() + 5
    while job_queue.progress.value < 2 and time.time() < deadline:
        time.sleep(0.005)
    progress = job_queue.progress
    assert progress.job_id == job.id and progress.node == "2" and progress.max == 1000
    assert progress.value >= 2 and progress.preview is not None and progress.started == job_queue.get(job.id).started
    Gate.opened.set()
    finished = job_queue.wait(job.id, timeout=5)
    assert finished.status == "success" and job_queue.progress.job_id is None
    progress_events = [d for n, d in sub.drain() if n == "progress"]
    assert progress_events and all("preview" in d for d in progress_events)  # the websocket layer sends it
    assert all("preview" not in d for _, d in finished.messages)


# -- validation and failures -----------------------------------------------------------------------

def test_invalid_workflow_is_refused_with_node_errors(make_queue):
    job_queue = make_queue()
    bad = {"1": {"class_type": "Number", "inputs": {"value": -5}},
           "2": {"class_type": "Nope", "inputs": {}},
           "3": {"class_type": "Show", "inputs": {"value": ["1", 0], "label": "x"}}}
    with pytest.raises(InvalidWorkflow) as caught:
        job_queue.submit(bad)
    body = caught.value.response()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"1", "2"}
    assert body["node_errors"]["2"]["errors"][0]["type"] == "missing_node_type"
    with pytest.raises(InvalidWorkflow) as caught:
        job_queue.submit("{not json")
    assert caught.value.response()["error"]["type"] == "invalid_prompt"
    assert job_queue.remaining() == 0 and job_queue.pending() == []


def test_a_node_failure_leaves_the_worker_running_the_next_job(make_queue):
    job_queue = make_queue()
    broken = job_queue.submit(failing())
    good = job_queue.submit(show("after"))
    job_queue.start()
    broken = job_queue.wait(broken.id, timeout=5)
    assert broken.status == "error" and broken.status_str == "error" and not broken.completed
    assert broken.error["exception_message"] == "boom" and broken.error["node_id"] == "2"
    assert broken.messages[-1][0] == "execution_error"
    assert job_queue.wait(good.id, timeout=5).status == "success"
    assert [j.id for j in job_queue.history()] == [broken.id, good.id]


# -- cancel, interrupt, wait -----------------------------------------------------------------------

def test_cancel_pending_job_never_runs(make_queue):
    job_queue = make_queue()
    running = start_gated(job_queue)
    waiting = job_queue.submit(show("cancelled"))
    assert job_queue.remaining() == 2
    assert job_queue.cancel(waiting.id) is True
    assert job_queue.remaining() == 1 and job_queue.get(waiting.id).status == "cancelled"
    assert job_queue.cancel(waiting.id) is False and job_queue.cancel("no-such-job") is False
    Gate.opened.set()
    assert job_queue.wait(running.id, timeout=5).status == "success"
    assert job_queue.wait(waiting.id, timeout=1).status == "cancelled"
    assert "cancelled" not in RUNS
    assert [j.id for j in job_queue.history()] == [running.id]  # cancelled jobs are not history


def test_interrupt_stops_only_the_running_job_it_names(make_queue):
    job_queue = make_queue()
    running = start_gated(job_queue)
    following = job_queue.submit(show("next"))
    assert job_queue.interrupt(following.id) is False  # pending, not running
    assert job_queue.interrupt(running.id) is True
    interrupted = job_queue.wait(running.id, timeout=5)
    assert interrupted.status == "interrupted" and interrupted.status_str == "error"
    assert interrupted.messages[-1][0] == "execution_interrupted"
    assert job_queue.wait(following.id, timeout=5).status == "success"
    assert job_queue.interrupt() is False  # nothing running


def test_cancel_running_job_interrupts_it(make_queue):
    job_queue = make_queue()
    running = start_gated(job_queue)
    assert job_queue.running().id == running.id
    assert job_queue.cancel(running.id) is True
    assert job_queue.wait(running.id, timeout=5).status == "interrupted"


def test_clear_pending_cancels_everything_queued(make_queue):
    job_queue = make_queue()
    jobs = [job_queue.submit(show(label)) for label in "xyz"]
    assert job_queue.clear_pending() == 3
    job_queue.start()
    assert all(job_queue.wait(j.id, timeout=1).status == "cancelled" for j in jobs) and RUNS == []


def test_wait_times_out_then_returns_when_done(make_queue):
    job_queue = make_queue()
    job = start_gated(job_queue)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        job_queue.wait(job.id, timeout=0.05)
    assert time.monotonic() - began < 2
    threading.Timer(0.05, Gate.opened.set).start()
    assert job_queue.wait(job.id, timeout=5).status == "success"
    with pytest.raises(KeyError):
        job_queue.wait("no-such-job", timeout=0.01)


# -- persistence -----------------------------------------------------------------------------------

def test_queue_and_history_survive_a_restart_and_a_crash(make_queue, tmp_path):
    db_path = tmp_path / "jobs.sqlite3"
    first = make_queue(db_path=db_path)
    first.start()
    old = first.wait(first.submit(show("before"), client_id="c").id, timeout=5)
    first.stop()
    crashed = first.submit(show("crashed"))
    queued = first.submit(show("queued"))
    first.close()
    with sqlite3.connect(db_path) as conn:  # as if the process died while running `crashed`
        conn.execute("UPDATE jobs SET status = 'running', started = 1, attempts = 1 WHERE id = ?", (crashed.id,))

    second = make_queue(db_path=db_path)
    assert second.running().id == crashed.id and [j.id for j in second.pending()] == [queued.id]
    second.start()
    assert second.wait(crashed.id, timeout=5).status == "success"
    assert second.wait(queued.id, timeout=5).status == "success"
    history = second.history()
    assert [j.id for j in history] == [old.id, crashed.id, queued.id]
    assert history[0].outputs == old.outputs and history[0].messages == old.messages
    assert history[0].number == old.number and history[0].client_id == "c"
    later = second.submit(show("later"))
    assert later.number > queued.number


def test_stop_puts_the_running_job_back_in_the_queue(make_queue, tmp_path):
    first = make_queue()
    job = start_gated(first)
    first.stop()
    assert first.get(job.id).status == "pending"
    first.close()
    Gate.opened.set()
    second = make_queue()
    second.start()
    assert second.wait(job.id, timeout=5).status == "success"


def test_a_job_that_keeps_killing_the_process_is_failed_not_retried_forever(make_queue, tmp_path):
    db_path = tmp_path / "jobs.sqlite3"
    first = make_queue(db_path=db_path)
    job = first.submit(show("deadly"))
    first.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE jobs SET status = 'running', attempts = 3 WHERE id = ?", (job.id,))
    second = make_queue(db_path=db_path)
    second.start()
    failed = second.wait(job.id, timeout=5)
    assert failed.status == "error" and failed.messages[0][0] == "execution_error" and RUNS == []


def test_history_limits_and_deletion(make_queue):
    job_queue = make_queue()
    job_queue.start()
    jobs = [job_queue.wait(job_queue.submit(show(f"h{i}")).id, timeout=5) for i in range(4)]
    assert [j.id for j in job_queue.history(max_items=2)] == [jobs[2].id, jobs[3].id]
    job_queue.delete_history([jobs[0].id])
    assert [j.id for j in job_queue.history()] == [j.id for j in jobs[1:]]
    job_queue.delete_history()
    assert job_queue.history() == [] and job_queue.get(jobs[1].id) is None


def test_concurrent_submits_all_run_with_unique_increasing_numbers(make_queue):
    job_queue = make_queue()
    job_queue.start()
    submitted: list = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for n in range(5):
            job = job_queue.submit(show(f"t{index}-{n}", value=index * 10 + n), client_id=f"client{index}")
            with lock:
                submitted.append(job)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job in submitted:
        assert job_queue.wait(job.id, timeout=10).status == "success"
    history = job_queue.history()
    numbers = [job.number for job in history]
    assert len(history) == 40 and len(set(numbers)) == 40
    assert numbers == sorted(numbers)  # run in the order they were numbered
    assert {j.id for j in history} == {j.id for j in submitted}


def test_chosen_ids_and_numbers_and_a_database_from_before_them(make_queue, tmp_path):
    db_path = tmp_path / "old.sqlite3"
    with sqlite3.connect(db_path) as conn:  # the schema before client-chosen numbers: number UNIQUE
        conn.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, number INTEGER NOT NULL UNIQUE, status TEXT NOT NULL,"
                     " workflow TEXT NOT NULL, client_id TEXT, extra TEXT NOT NULL, output_nodes TEXT NOT NULL,"
                     " created REAL NOT NULL, started REAL, finished REAL, attempts INTEGER NOT NULL DEFAULT 0,"
                     " outputs TEXT NOT NULL DEFAULT '{}', error TEXT, messages TEXT NOT NULL DEFAULT '[]')")
        conn.execute("INSERT INTO jobs (id, number, status, workflow, extra, output_nodes, created)"
                     " VALUES ('old', 4, 'pending', ?, '{}', '[\"2\"]', 1.0)", (json.dumps(show("old")),))
    job_queue = make_queue(db_path=db_path)
    assert [j.id for j in job_queue.pending()] == ["old"]  # kept through the migration
    same_number = job_queue.submit(show("same"), number=4)  # numbers need not be unique any more
    before = job_queue.submit(show("before"), number=-2.5, job_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    assert before.id == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0" and before.number == -2.5
    with pytest.raises(DuplicateJobId, match="0f1e2d3c"):
        job_queue.submit(show("again"), job_id=before.id)
    assert [j.id for j in job_queue.pending()] == [before.id, "old", same_number.id]
    job_queue.start()
    job_queue.wait(same_number.id, timeout=5)
    assert [run for run in RUNS if not run.startswith("Number")] == ["before", "old", "same"]


# -- the hub on its own ----------------------------------------------------------------------------

def test_hub_fans_out_by_client():
    hub = EventHub()
    alice, bob, everyone = hub.subscribe("alice"), hub.subscribe("bob"), hub.subscribe(None)
    hub.publish("executed", {"n": 1}, "alice")
    hub.publish("status", {"n": 2})
    assert alice.drain() == [("executed", {"n": 1}), ("status", {"n": 2})]
    assert bob.drain() == [("status", {"n": 2})]
    assert everyone.drain() == [("executed", {"n": 1}), ("status", {"n": 2})]
    with pytest.raises(queue.Empty):
        bob.get(timeout=0.01)
    hub.unsubscribe(bob)
    hub.publish("status", {"n": 3})
    with pytest.raises(SubscriptionClosed):
        bob.get_nowait()
    assert hub.subscriber_count() == 2


def test_hub_async_get_wakes_on_a_publish_from_another_thread():
    hub = EventHub()
    sub = hub.subscribe("c")

    async def read() -> list:
        threading.Timer(0.02, hub.publish, ("executing", {"node": "1"}, "c")).start()
        first = await asyncio.wait_for(sub.get(), timeout=5)
        threading.Timer(0.02, sub.close).start()
        with pytest.raises(SubscriptionClosed):
            await asyncio.wait_for(sub.get(), timeout=5)
        return [first]

    assert asyncio.run(read()) == [("executing", {"node": "1"})]


def test_a_slow_reader_loses_progress_first_and_is_closed_rather_than_lose_results():
    hub = EventHub(buffer_size=4)
    slow = hub.subscribe("c")
    for step in range(3):
        hub.publish("progress", {"value": step}, "c")
    hub.publish("executed", {"node": "9"}, "c")
    hub.publish("executing", {"node": "10"}, "c")  # full: the oldest progress goes
    hub.publish("progress", {"value": 99}, "c")  # full: the next oldest progress goes
    assert slow.drain() == [("progress", {"value": 2}), ("executed", {"node": "9"}),
                            ("executing", {"node": "10"}), ("progress", {"value": 99})]
    assert slow.dropped == 2

    for node in range(4):
        hub.publish("executed", {"node": str(node)}, "c")
    hub.publish("progress", {"value": 1}, "c")  # full of results: a progress event is simply skipped
    assert slow.pending_count() == 4 and not slow.closed
    hub.publish("executed", {"node": "lost?"}, "c")  # would be lost: the subscription ends instead
    assert slow.closed and slow.overflowed and hub.subscriber_count() == 0
    with pytest.raises(SubscriptionClosed):
        slow.get(timeout=0.01)


def test_a_progress_carrying_an_output_image_is_never_dropped_as_a_preview_would_be():
    from PIL import Image

    from inkwash.nodes.formats.preview_frames import ImageFrame

    hub = EventHub(buffer_size=3)
    slow = hub.subscribe("c")
    frame = ImageFrame(Image.new("RGB", (4, 4)))
    hub.publish("progress", {"value": 0, "preview": frame}, "c")  # SaveImageWebsocket's image
    hub.publish("progress", {"value": 1, "preview": Image.new("RGB", (4, 4))}, "c")  # a sampler preview
    hub.publish("executing", {"node": "2"}, "c")
    hub.publish("executed", {"node": "2"}, "c")  # full: the preview goes, the output image stays
    assert [(name, data.get("value")) for name, data in slow.drain()] == [
        ("progress", 0), ("executing", None), ("executed", None)]
    assert slow.dropped == 1


class Warns(Node):
    """Logs warnings as the runtime does (a missing embedding), twice the same one."""

    inputs = [Input("value", "INT")]
    outputs = [Output("INT")]

    def run(self, value):
        log = logging.getLogger("inkwash.nodes.runtime.stub")
        log.warning("embedding 'EasyNegative' not found")
        log.warning("embedding 'EasyNegative' not found")  # e.g. read again by a second text encoder
        log.warning("something else")
        return (value,)


def test_node_warnings_reach_the_jobs_messages_and_client_once_each(tmp_path):
    hub = EventHub()
    sub = hub.subscribe("c")
    job_queue = JobQueue(tmp_path / "jobs.sqlite3", {**REGISTRY, "Warns": Warns}, hub)
    try:
        job_queue.start()
        workflow = {"1": {"class_type": "Number", "inputs": {"value": 2}},
                    "2": {"class_type": "Warns", "inputs": {"value": ["1", 0]}},
                    "3": {"class_type": "Show", "inputs": {"value": ["2", 0], "label": "w"}}}
        job = job_queue.wait(job_queue.submit(workflow, client_id="c").id, timeout=5)
    finally:
        job_queue.close()
    assert job.status == "success"
    warnings = [(d["node_id"], d["message"]) for name, d in job.messages if name == "execution_warning"]
    assert warnings == [("2", "embedding 'EasyNegative' not found"), ("2", "something else")]
    sent = [(d["node_id"], d["message"]) for name, d in sub.drain() if name == "execution_warning"]
    assert sent == warnings
