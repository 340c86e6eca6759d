"""The queue with several workers, on stand-in workers (no models, no Ray): jobs run at once, go to
the worker whose cache holds their checkpoint, and a worker that dies gets its job requeued."""
import threading

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from inkwash.webui.comfy_api import router
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.jobs import MAX_ATTEMPTS, Job, JobQueue
from inkwash.webui.workers import dispatch
from inkwash.webui.workers.base import Worker, WorkerLost, WorkResult

SAVE = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


class StandIn(Worker):
    """Runs a job by sending ComfyUI's events; holds it until `release` is set; dies when told to."""

    def __init__(self, name: str, dies: bool = False):
        super().__init__()
        self.name, self.dies = name, dies
        self.release = threading.Event()
        self.ran: list[str] = []

    def run(self, request, emit, warn):
        self.ran.append(request.job_id)
        emit("execution_start", {"prompt_id": request.job_id, "timestamp": 0})
        if self.dies:
            raise WorkerLost("killed")
        self.release.wait(30)
        emit("execution_success", {"prompt_id": request.job_id, "timestamp": 0})
        return WorkResult("success", {"2": {"images": []}})

    def interrupt(self):
        self.release.set()

    def free_memory(self):
        pass

    def device(self):
        return {"name": f"cpu of {self.name}", "type": "cpu", "index": None, "vram_total": 1, "vram_free": 1,
                "torch_vram_total": 1, "torch_vram_free": 1}


def wait_until(predicate, timeout=10):
    event = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        event.wait(0.02)
    raise AssertionError("condition not reached")


def app_for(queue, hub, folders, registry, tmp_path):
    ctx = ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=tmp_path)
    app = FastAPI()
    app.include_router(router(ctx))
    return TestClient(app), ctx


def test_two_workers_run_two_jobs_at_once_listed_in_queue_stats_and_the_queue_tab(folders, registry, tmp_path):
    (folders.input_dir / "in.png").write_bytes(b"")  # LoadImage validates the name only
    first, second = StandIn("w1"), StandIn("w2")
    hub = EventHub()
    queue = JobQueue(tmp_path / "jobs.db", registry, hub, workers=[first, second])
    client, ctx = app_for(queue, hub, folders, registry, tmp_path)
    queue.start()
    try:
        jobs = [queue.submit(SAVE, client_id="c") for _ in range(3)]
        wait_until(lambda: len(queue.running_jobs()) == 2)
        listed = client.get("/queue").json()
        assert sorted(item[1] for item in listed["queue_running"]) == sorted(j.id for j in jobs[:2])
        assert [item[1] for item in listed["queue_pending"]] == [jobs[2].id]
        devices = client.get("/system_stats").json()["devices"]
        assert [(d["worker"], d["name"]) for d in devices] == [("w1", "cpu of w1"), ("w2", "cpu of w2")]

        first.release.set()
        second.release.set()
        done = [queue.wait(job.id, timeout=10) for job in jobs]
        assert [job.status for job in done] == ["success"] * 3
        assert {job.worker for job in done[:2]} == {"w1", "w2"}

        from inkwash.webui.tabs.history import COLUMNS, job_rows

        rows = {row[0]: row for row in job_rows(ctx)}
        assert [rows[job.id][COLUMNS.index("worker")] for job in done] == [job.worker for job in done]
    finally:
        queue.close()


def test_a_job_whose_worker_dies_is_requeued_and_failed_after_max_attempts(folders, registry, tmp_path):
    (folders.input_dir / "in.png").write_bytes(b"")
    dying = StandIn("dying", dies=True)
    hub = EventHub()
    events = hub.subscribe("c")
    queue = JobQueue(tmp_path / "jobs.db", registry, hub, workers=[dying])
    queue.start()
    try:
        job = queue.submit(SAVE, client_id="c")
        done = queue.wait(job.id, timeout=10)
        assert dying.ran == [job.id] * MAX_ATTEMPTS
        assert done.status == "error" and done.error["exception_type"] == "WorkerLost"
        assert f"a worker died during this job {MAX_ATTEMPTS} times" in done.error["exception_message"]
        names = [(name, data.get("node", "-")) for name, data in events.drain() if name != "status"]
        assert names == [("execution_start", "-")] * MAX_ATTEMPTS + [("execution_error", "-"), ("executing", None)]
    finally:
        queue.close()


def job_with(ckpt: str, number: int) -> Job:
    workflow = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}
    return Job(f"job-{number}", number, workflow, None, {}, "pending", 0.0)


def test_an_idle_worker_leaves_a_job_to_the_idle_worker_whose_cache_holds_its_checkpoint():
    warm_a, cold = StandIn("warm"), StandIn("cold")
    warm_a.warm = {"a.safetensors"}
    a_job, b_job = job_with("a.safetensors", 1), job_with("b.safetensors", 2)
    assert dispatch.choose([a_job, b_job], cold, [warm_a, cold]) is b_job
    assert dispatch.choose([a_job, b_job], warm_a, [warm_a, cold]) is a_job
    assert dispatch.choose([a_job], cold, [warm_a, cold]) is None  # the warm worker takes it
    assert dispatch.choose([a_job], cold, [cold]) is a_job  # the warm one is busy: nothing waits


class Lacking(StandIn):
    """A worker whose models folder lacks the job's checkpoint: the job is invalid there."""

    def run(self, request, emit, warn):
        self.ran.append(request.job_id)
        error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                 "details": f"value not in list: ckpt_name 'a.safetensors' (on worker {self.name})", "extra_info": {}}
        return WorkResult("invalid", invalid={"error": error, "node_errors": {}})


def test_a_job_goes_to_a_worker_that_has_its_model_or_fails_naming_the_workers(folders, registry, tmp_path):
    (folders.input_dir / "in.png").write_bytes(b"")
    lacking, having = Lacking("lacking"), StandIn("having")
    having.release.set()
    queue = JobQueue(tmp_path / "jobs.db", registry, EventHub(), workers=[lacking, having])
    queue.start()
    try:
        for _ in range(3):
            done = queue.wait(queue.submit(SAVE).id, timeout=10)
            assert done.status == "success" and done.worker == "having"
    finally:
        queue.close()

    both = [Lacking("one"), Lacking("two")]
    queue = JobQueue(tmp_path / "jobs2.db", registry, EventHub(), workers=both)
    queue.start()
    try:
        done = queue.wait(queue.submit(SAVE).id, timeout=10)
        assert done.status == "error" and done.error["exception_type"] == "InvalidWorkflow"
        message = done.error["exception_message"]
        assert "ckpt_name 'a.safetensors'" in message and "every worker refused it: one, two" in message
        assert [len(worker.ran) for worker in both] == [1, 1]
    finally:
        queue.close()


def test_serve_options_for_ray_workers():
    import argparse

    from inkwash.webui.serve_options import ServeRefused, add_serve_arguments, resolve

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert resolve(parser.parse_args([])).workers == "local"
    options = resolve(parser.parse_args(["--workers", "ray", "--ray-workers", "2"]))
    assert (options.workers, options.ray_workers, options.ray_address) == ("ray", 2, None)
    options = resolve(parser.parse_args(["--ray", "127.0.0.1:6379"]))
    assert (options.workers, options.ray_address) == ("ray", "127.0.0.1:6379")
    for argv, said in ((["--ray-workers", "2"], "goes with --workers ray"),
                       (["--ray", "auto", "--ray-workers", "2"], "give one of them"),
                       (["--workers", "ray", "--ray-workers", "0"], "at least 1")):
        with pytest.raises(ServeRefused, match=said):
            resolve(parser.parse_args(argv))


def test_workers_follow_the_ray_cluster_s_nodes_as_they_join_and_leave(folders, registry, tmp_path, monkeypatch):
    """Against the node list Ray would give (no Ray runtime: a real cluster join is in test_ray_cluster.py)."""
    from inkwash.webui.workers.ray_worker import RayOptions, RayWorker, RayWorkers

    nodes = [{"NodeID": "a", "Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 8.0}}]
    monkeypatch.setattr(RayWorkers, "_nodes", staticmethod(lambda: [dict(node) for node in nodes]))
    placed = []

    def place(self, name, gpu, node_id):  # where Ray would start an actor on that node
        worker = RayWorker(name, None, registry, folders, node_id=node_id)
        worker.wait_ready = lambda timeout=0: {}
        placed.append((name, gpu, node_id))
        self.workers.append(worker)
        return worker

    monkeypatch.setattr(RayWorkers, "_add", place)
    pool = RayWorkers(RayOptions(address="auto", poll_seconds=0.01), registry, folders)
    pool._reconcile()
    queue = JobQueue(tmp_path / "jobs.db", registry, EventHub(), workers=list(pool.workers))
    pool.attach(queue)
    try:
        assert placed == [("ray-10.0.0.1-cpu0", False, "a")]  # a node without GPUs: one CPU worker
        nodes.append({"NodeID": "b", "Alive": True, "NodeManagerAddress": "10.0.0.2",
                      "Resources": {"CPU": 16.0, "GPU": 2.0}})
        wait_until(lambda: len(queue.workers) == 3)
        assert placed[1:] == [("ray-10.0.0.2-gpu0", True, "b"), ("ray-10.0.0.2-gpu1", True, "b")]
        first = queue.workers[0]
        nodes[0]["Alive"] = False
        wait_until(lambda: [w.name for w in queue.workers] == ["ray-10.0.0.2-gpu0", "ray-10.0.0.2-gpu1"])
        assert first.gone and not first.alive
        assert len(placed) == 3  # no worker placed twice
    finally:
        pool._stop.set()
        queue.close()


class GoneForGood(StandIn):
    """Dies under its first job and never comes back (its machine left)."""

    def wait_until_back(self):
        self.gone = True

    @property
    def alive(self):
        return not getattr(self, "gone", False)


def test_a_worker_that_does_not_come_back_is_dropped_and_a_new_one_takes_its_job(folders, registry, tmp_path):
    (folders.input_dir / "in.png").write_bytes(b"")
    lost = GoneForGood("lost", dies=True)
    queue = JobQueue(tmp_path / "jobs.db", registry, EventHub(), workers=[lost])
    queue.start()
    try:
        job = queue.submit(SAVE)
        wait_until(lambda: queue.workers == [])
        assert lost.ran == [job.id] and queue.get(job.id).status == "pending"
        joined = StandIn("joined")
        joined.release.set()
        queue.add_worker(joined)
        done = queue.wait(job.id, timeout=10)
        assert (done.status, done.worker) == ("success", "joined")
    finally:
        queue.close()
