"""Jobs per minute on the demo model: the in-process worker, 1 Ray worker and 2 Ray workers, in one run.

Every worker runs torch on one thread (a Ray CPU worker is given one CPU), so on a machine with two
free cores the ceiling of 2 workers over 1 is 2x. Prints jobs per minute for each, the scaling
efficiency of 2 Ray workers over 1 ((jobs/min 2 / jobs/min 1) / 2), and the per-job overhead of Ray
dispatch: seconds per job on 1 Ray worker over seconds per job in process, and the time a job spends
outside its execution (queue claim to record, less execution_start to execution_success: transfers,
event streaming, saving) per job, in process and on Ray. Each setup runs one warm-up job per worker
first (model load), not counted.

  python bench/bench_workers.py              # 8 jobs of 10 steps at 128x128
  python bench/bench_workers.py --jobs 4 --steps 4
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def workflow(seed: int, steps: int) -> dict:
    flow = copy.deepcopy(json.loads((REPO / "workflows" / "txt2img.json").read_text()))
    flow["3"]["inputs"].update(seed=seed, steps=steps)
    return flow


def jobs_per_minute(queue, jobs: int, steps: int, warm_ups: int) -> tuple[float, float]:
    """Warm every worker up, then time `jobs` jobs submitted at once: (jobs per minute, mean seconds
    a job spent outside its execution)."""
    for job in [queue.submit(workflow(1000 + n, steps)) for n in range(warm_ups)]:
        assert queue.wait(job.id, timeout=1800).status == "success"
    events = queue.hub.subscribe(None)
    start = time.perf_counter()
    submitted = [queue.submit(workflow(seed, steps)) for seed in range(jobs)]
    finished = []
    for job in submitted:
        done = queue.wait(job.id, timeout=1800)
        assert done.status == "success", done.error
        finished.append(done)
    rate = jobs / (time.perf_counter() - start) * 60
    stamps: dict[str, dict] = {}
    for name, data in events.drain():
        if name in ("execution_start", "execution_success"):
            stamps.setdefault(data["prompt_id"], {})[name] = data["timestamp"] / 1000
    outside = [(job.finished - job.started) - (stamps[job.id]["execution_success"] - stamps[job.id]["execution_start"])
               for job in finished]
    return rate, sum(outside) / len(outside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch: the queue's worker thread too, as a Ray CPU worker

    import torch

    from inkwash.nodes import folders as folders_module
    from inkwash.nodes.registry import core_nodes
    from inkwash.webui.events import EventHub
    from inkwash.webui.jobs import JobQueue
    from inkwash.webui.workers.ray_worker import RayOptions, RayWorkers

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    folders = folders_module.configure(output_dir=root / "output", input_dir=root / "input", temp_dir=root / "temp")
    for path in (folders.output_dir, folders.input_dir, folders.temp_dir):
        path.mkdir(parents=True)
    registry = core_nodes()

    def measure(name: str, workers) -> tuple[float, float]:
        queue = JobQueue(root / f"{name}.db", registry, EventHub(), workers=workers)
        queue.start()
        try:
            rate, outside = jobs_per_minute(queue, args.jobs, args.steps, warm_ups=len(workers or [None]))
        finally:
            queue.close()
        print(f"{name:>14}: {rate:6.1f} jobs/min, {outside * 1000:6.1f} ms a job outside its execution", flush=True)
        return rate, outside

    in_process, local_outside = measure("in-process", None)
    pool = RayWorkers(RayOptions(workers=2, object_store_bytes=100 * 2**20), registry, folders)
    pool.start()
    try:
        one, ray_outside = measure("1 Ray worker", pool.workers[:1])
        two, _ = measure("2 Ray workers", pool.workers)
    finally:
        pool.shutdown()
    print(f"scaling efficiency, 2 Ray workers over 1: {two / one / 2:.2f} (1.00 = twice the jobs per minute)")
    print(f"per-job time, 1 Ray worker / in-process: {in_process / one:.2f}")
    print(f"time a job spends outside its execution, Ray / in-process: {ray_outside / max(local_outside, 1e-6):.1f} "
          f"(+{(ray_outside - local_outside) * 1000:.0f} ms per job)")
    print(f"jobs per minute, 2 Ray workers / in-process: {two / in_process:.2f}")


if __name__ == "__main__":
    sys.exit(main())
