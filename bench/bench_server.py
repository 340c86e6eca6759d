"""The ComfyUI API path vs running the same workflow directly, and time to the first live preview.

One process starts the real server (uvicorn, on a free local port) and, beside it, an executor of its
own on the same models. Each run changes only the seed, so both sides re-run the sampler, decode and
save with the models loaded. Prints:
  1. API time (POST /prompt until execution_success arrives on the websocket) / direct time
     (Executor.execute, as `inkwash run` does after its start-up);
  2. time from POST /prompt to the first binary preview frame on the websocket, against the time the
     direct run takes to report its first sampler step;
  3. `inkwash run` as a user starts it (a fresh process: imports, model load, run) for reference.

  python bench/bench_server.py                 # the bundled demo model if present, else a tiny one
  python bench/bench_server.py --runs 10
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEMO = "inkwash-demo.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def the_workflow(ckpt: str, size: int, steps: int) -> dict:
    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    workflow["4"]["inputs"]["ckpt_name"] = ckpt
    workflow["5"]["inputs"].update(width=size, height=size)
    workflow["3"]["inputs"]["steps"] = steps
    return workflow


def with_seed(workflow: dict, seed: int) -> dict:
    copy = json.loads(json.dumps(workflow))
    copy["3"]["inputs"]["seed"] = seed
    return copy


async def api_run(port: int, workflow: dict, client_id: str) -> tuple[float, float | None]:
    """(seconds until execution_success, seconds until the first preview frame or None)."""
    import httpx
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/ws?clientId={client_id}", max_size=None) as ws:
        await ws.recv()  # the initial status
        started = time.perf_counter()
        async with httpx.AsyncClient() as client:
            response = await client.post(f"http://127.0.0.1:{port}/prompt",
                                          json={"prompt": workflow, "client_id": client_id})
        response.raise_for_status()
        prompt_id = response.json()["prompt_id"]
        first_preview = None
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                first_preview = first_preview or time.perf_counter() - started
                continue
            event = json.loads(message)
            if event["type"] == "execution_error":
                raise RuntimeError(event["data"].get("exception_message"))
            if event["type"] == "execution_success" and event["data"]["prompt_id"] == prompt_id:
                return time.perf_counter() - started, first_preview


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import uvicorn

    from inkwash.nodes.executor import Executor
    from inkwash.nodes.registry import core_nodes
    from inkwash.webui.serve_options import ServeOptions
    from inkwash.webui.server import create_app, create_context

    work = Path(tempfile.mkdtemp(prefix="inkwash-bench-"))
    models = REPO / "models"
    if (models / "checkpoints" / DEMO).is_file():
        ckpt, size = DEMO, 128
    else:
        from bench_models import write_checkpoint

        models = work / "models"
        ckpt, size = write_checkpoint(models / "checkpoints").name, 64
    print(f"model {ckpt}, {size}x{size}, {args.steps} steps, {args.runs} runs each (median)")
    options = ServeOptions(port=free_port(), models_dir=models, output_dir=work / "output",
                           input_dir=work / "input", data_dir=work / "data")
    ctx = create_context(options)
    server = uvicorn.Server(uvicorn.Config(create_app(ctx, options, with_ui=False), host="127.0.0.1",
                                           port=options.port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    workflow = the_workflow(ckpt, size, args.steps)
    direct = Executor(core_nodes())
    first_step: list[float] = []

    def direct_run(seed: int) -> float:
        started = time.perf_counter()
        seen = []

        def on_event(name: str, data: dict) -> None:
            if name == "progress" and not seen:
                seen.append(time.perf_counter() - started)

        result = direct.execute(with_seed(workflow, seed), on_event=on_event)
        assert result.status == "success", result.error
        first_step.append(seen[0])
        return time.perf_counter() - started

    # Warm both (model load, first-call overheads), then alternate so drift hits both alike.
    direct_run(0)
    asyncio.run(api_run(options.port, with_seed(workflow, 0), "bench"))
    direct_times, api_times, previews = [], [], []
    for run in range(1, args.runs + 1):
        direct_times.append(direct_run(run))
        api_time, preview = asyncio.run(api_run(options.port, with_seed(workflow, run), "bench"))
        api_times.append(api_time)
        if preview is not None:
            previews.append(preview)
    server.should_exit = True

    d, a = statistics.median(direct_times), statistics.median(api_times)
    print(f"direct executor   {d * 1000:8.1f} ms")
    print(f"ComfyUI API       {a * 1000:8.1f} ms   ratio API / direct = {a / d:.3f}")
    if previews:
        p, s = statistics.median(previews), statistics.median(first_step[1:])
        print(f"first live preview after {p * 1000:.1f} ms (the direct run's first sampler step: {s * 1000:.1f} ms; "
              f"ratio {p / s:.2f}); {p / a:.0%} of the job")
    else:
        print("no preview frame arrived")

    path = work / "workflow.json"
    path.write_text(json.dumps(with_seed(workflow, 999)))
    cli = [sys.executable, "-m", "inkwash.webui.cli", "run", str(path), "--models-dir", str(models),
           "--output-dir", str(work / "output")]
    started = time.perf_counter()
    completed = subprocess.run(cli, capture_output=True)
    cold = time.perf_counter() - started
    status = "ok" if completed.returncode == 0 else f"exit {completed.returncode}"
    print(f"`inkwash run` in a fresh process (imports + model load + run): {cold:.2f} s ({status}); "
          f"ratio to a warm API job {cold / a:.1f}")


if __name__ == "__main__":
    main()
