"""The queue's workers on Ray: a local Ray runtime with two CPU workers (actors) and the demo model,
shared by the tests of this module (Ray starts slowly). Skipped where Ray is not installed."""
import copy
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: on 127.0.0.1 only
ray = pytest.importorskip("ray")

from inkwash.nodes import folders as folders_module  # noqa: E402
from inkwash.nodes.executor import Executor  # noqa: E402
from inkwash.webui.events import EventHub  # noqa: E402
from inkwash.webui.jobs import JobQueue  # noqa: E402
from inkwash.webui.workers.ray_worker import RayOptions, RayWorkers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO = json.loads((REPO / "workflows" / "txt2img.json").read_text())  # the demo model, 128x128


def demo_job(seed: int, steps: int = 6) -> dict:
    workflow = copy.deepcopy(DEMO)
    workflow["3"]["inputs"].update(seed=seed, steps=steps)
    return workflow


@pytest.fixture(scope="module")
def ray_workers(tmp_path_factory):
    """Two CPU workers on a local Ray runtime; the server's folders in a temp folder, the models the
    repo's (the demo checkpoint)."""
    root = tmp_path_factory.mktemp("ray")
    previous = folders_module.current()
    folders = folders_module.configure(output_dir=root / "output", input_dir=root / "input", temp_dir=root / "temp")
    for path in (folders.output_dir, folders.input_dir, folders.temp_dir):
        path.mkdir(parents=True)
    from inkwash.nodes.registry import core_nodes

    pool = RayWorkers(RayOptions(workers=2, object_store_bytes=100 * 2**20), core_nodes(), folders)
    pool.start()
    yield pool
    pool.shutdown()
    folders_module._current = previous


@pytest.fixture
def ray_queue(ray_workers, tmp_path):
    """(queue, hub, folders): a job queue on the two Ray workers, its output folder emptied first."""
    folders = ray_workers.folders
    for path in folders.output_dir.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    hub = EventHub()
    queue = JobQueue(tmp_path / "jobs.db", ray_workers.registry, hub, workers=ray_workers.workers)
    queue.start()
    yield queue, hub, folders
    queue.interrupt()
    queue.close()


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def saved_file(folders, job) -> Path:
    (entry,) = job.outputs["9"]["images"]
    return folders.output_dir / entry["subfolder"] / entry["filename"]


def wait_for_event(subscription, name: str, prompt_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event, data = subscription.get(timeout=max(deadline - time.monotonic(), 0.01))
        if event == name and data.get("prompt_id") == prompt_id:
            return data
    raise TimeoutError(f"no {name} for {prompt_id}")


def test_four_jobs_from_two_clients_run_two_at_a_time_with_in_process_pixels(ray_queue, registry, one_thread, tmp_path):
    queue, hub, folders = ray_queue
    clients = {"alice": hub.subscribe("alice"), "bob": hub.subscribe("bob")}
    workflows = [demo_job(seed) for seed in (11, 12, 13, 14)]
    jobs = [queue.submit(workflow, client_id=("alice", "bob")[index % 2]) for index, workflow in enumerate(workflows)]
    done = [queue.wait(job.id, timeout=600) for job in jobs]
    assert [job.status for job in done] == ["success"] * 4, [job.error for job in done]
    assert {job.worker for job in done} == {"ray-0", "ray-1"}

    # each client got the events of its own jobs, start to end; the workers' timestamps give each
    # job's execution interval
    intervals = {}
    for client, subscription in clients.items():
        events = subscription.drain()
        mine = {job.id for job in jobs if job.client_id == client}
        assert {data["prompt_id"] for event, data in events if event == "execution_start"} == mine
        for job_id in mine:
            start = next(d["timestamp"] for e, d in events if e == "execution_start" and d["prompt_id"] == job_id)
            end = next(d["timestamp"] for e, d in events if e == "execution_success" and d["prompt_id"] == job_id)
            intervals[job_id] = (start, end)
            names = [e for e, d in events if d.get("prompt_id") == job_id]
            assert names.count("executed") == 1 and names.count("progress") == 6
            assert [d for e, d in events if e == "executing" and d["prompt_id"] == job_id][-1]["node"] is None
    overlapping = [(a, b) for a in intervals for b in intervals if a < b
                   and intervals[a][0] < intervals[b][1] and intervals[b][0] < intervals[a][1]]
    assert overlapping, intervals

    # the history holds each job once, and the server's output folder each image once
    assert sorted(job.id for job in queue.history()) == sorted(job.id for job in jobs)
    assert sorted(p.name for p in folders.output_dir.iterdir()) == [f"inkwash_{n:05}_.png" for n in range(1, 5)]

    # the same workflows in this process: the same pixels
    local = folders_module.configure(output_dir=tmp_path / "local", temp_dir=tmp_path / "temp")
    try:
        executor = Executor(registry)
        for workflow, job in zip(workflows, done):
            result = executor.execute(workflow)
            (entry,) = result.outputs["9"]["images"]
            in_process = pixels(local.output_dir / entry["filename"])
            np.testing.assert_array_equal(in_process, pixels(saved_file(folders, job)))
    finally:
        folders_module._current = folders


def test_a_killed_worker_s_job_finishes_on_the_other_and_the_worker_comes_back(ray_queue):
    queue, hub, folders = ray_queue
    watching = hub.subscribe(None)
    job = queue.submit(demo_job(21, steps=40), client_id="carol")
    wait_for_event(watching, "progress", job.id)
    victim_name = queue.get(job.id).worker
    victim = next(worker for worker in queue.workers if worker.name == victim_name)
    old_pid = victim.wait_ready(timeout=5)["pid"]
    ray.kill(victim.actor, no_restart=False)

    done = queue.wait(job.id, timeout=600)
    assert done.status == "success" and done.worker != victim_name
    assert [job.id for job in queue.history()] == [job.id]
    assert [p.name for p in folders.output_dir.iterdir()] == ["inkwash_00001_.png"]
    assert queue.store._query("SELECT attempts FROM jobs WHERE id = ?", (job.id,))[0][0] == 2
    events = [(e, d) for e, d in watching.drain() if d.get("prompt_id") == job.id]
    assert [e for e, _ in events].count("execution_success") == 1
    assert [d for e, d in events if e == "executing" and d["node"] is None] == [
        {"node": None, "display_node": None, "prompt_id": job.id}]

    # the killed worker is back (a new process) and takes jobs again
    assert victim.wait_ready()["pid"] != old_pid
    # (its slot may still be between polls when the first pair arrives: a few pairs, bounded)
    ran_on = set()
    for seed in (22, 24, 26):
        pair = [queue.submit(demo_job(s, steps=30)) for s in (seed, seed + 1)]
        ran_on |= {queue.wait(j.id, timeout=600).worker for j in pair}
        if victim_name in ran_on:
            break
    assert ran_on == {"ray-0", "ray-1"}


def test_interrupt_and_cancel_reach_jobs_on_ray_workers(ray_queue):
    queue, hub, _ = ray_queue
    watching = hub.subscribe(None)
    first, second = (queue.submit(demo_job(seed, steps=1000)) for seed in (31, 32))
    for job in (first, second):
        wait_for_event(watching, "progress", job.id)
    live = queue.progress_of(first.id)  # what A1111's /progress reads: steps and the live preview
    assert live.max == 1000 and live.value >= 1 and isinstance(live.preview, Image.Image)
    pending = queue.submit(demo_job(33))
    assert queue.cancel(pending.id) and queue.get(pending.id).status == "cancelled"

    assert queue.interrupt(first.id)
    assert queue.wait(first.id, timeout=120).status == "interrupted"
    assert queue.get(second.id).status == "running"  # only the job asked for
    assert queue.cancel(second.id)  # a running job: interrupted
    stopped = queue.wait(second.id, timeout=120)
    assert stopped.status == "interrupted"
    assert [name for name, _ in stopped.messages][-1] == "execution_interrupted"
    steps = [d["value"] for e, d in watching.drain() if e == "progress" and d["prompt_id"] == second.id]
    assert max(steps) < 1000
    assert queue.get(pending.id).started is None  # the cancelled job never ran


def test_a_ray_worker_gets_input_images_by_content_and_returns_its_outputs(ray_queue):
    queue, hub, folders = ray_queue
    picture = Image.new("RGB", (24, 16), (10, 200, 30))
    picture.putpixel((3, 4), (250, 0, 0))
    (folders.input_dir / "sub").mkdir(exist_ok=True)
    picture.save(folders.input_dir / "sub" / "in.png")
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "sub/in.png"}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "copies/copy"}},
                "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    done = queue.wait(queue.submit(workflow).id, timeout=300)
    assert done.status == "success", done.error
    (saved,) = done.outputs["2"]["images"]
    assert saved == {"filename": "copy_00001_.png", "subfolder": "copies", "type": "output"}
    np.testing.assert_array_equal(pixels(folders.output_dir / "copies" / "copy_00001_.png"), np.asarray(picture))
    (preview,) = done.outputs["3"]["images"]
    assert preview["type"] == "temp" and (folders.temp_dir / preview["filename"]).is_file()

    # ComfyUI's /free reaches the worker that holds the cached nodes
    (worker,) = [w for w in queue.workers if w.name == done.worker]
    assert worker.wait_ready()["cached_nodes"] == 3
    queue.free_memory()
    ray.get(worker._freeing)
    assert worker.wait_ready()["cached_nodes"] == 0
