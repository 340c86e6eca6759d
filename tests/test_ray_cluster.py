"""`inkwash serve --ray ADDRESS` joins a Ray cluster started apart (`ray start --head`, on loopback),
places a worker on its node and runs a job sent through the ComfyUI API. Skipped without Ray.

Runs `ray stop` at the end, which stops every Ray runtime on this machine: this module starts none
of its own in the test process."""
import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
# Ray's multi-node switch off: the head and the server's driver use 127.0.0.1, not the machine's network address
LOOPBACK = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster():
    """The address of a one-node Ray cluster on 127.0.0.1 (one CPU), stopped afterwards."""
    env = LOOPBACK
    port = free_port()
    started = subprocess.run([RAY, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                              "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard=false",
                              "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stopped = subprocess.run([RAY, "stop"], env=env, capture_output=True, text=True, timeout=300)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_serve_joins_a_ray_cluster_and_runs_a_comfyui_job_there(cluster, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "inkwash.webui.cli", "serve", "--ray", cluster, "--port", str(port),
               "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "output"),
               "--input-dir", str(tmp_path / "input")]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                              env=LOOPBACK)
    try:
        deadline = time.monotonic() + 400
        stats = None
        while stats is None:
            assert server.poll() is None, server.stdout.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                stats = httpx.get(f"{base}/system_stats", timeout=5).json()
            except httpx.HTTPError:
                time.sleep(1)
        (device,) = stats["devices"]
        assert device["worker"] == "ray-127.0.0.1-cpu0" and device["type"] == "cpu"

        workflow = copy.deepcopy(json.loads((REPO / "workflows" / "txt2img.json").read_text()))
        workflow["3"]["inputs"]["steps"] = 4
        prompt_id = httpx.post(f"{base}/prompt", json={"prompt": workflow, "client_id": "remote"}).json()["prompt_id"]
        deadline = time.monotonic() + 300
        while not (history := httpx.get(f"{base}/history/{prompt_id}", timeout=10).json()):
            assert time.monotonic() < deadline, httpx.get(f"{base}/queue").json()
            time.sleep(0.5)
        entry = history[prompt_id]
        assert entry["status"]["status_str"] == "success", entry["status"]
        (image,) = entry["outputs"]["9"]["images"]
        saved = (tmp_path / "output" / image["filename"]).read_bytes()
        view = httpx.get(f"{base}/view", params={"filename": image["filename"], "type": "output"})
        assert view.status_code == 200 and view.content == saved and saved.startswith(b"\x89PNG")
        assert httpx.get(f"{base}/queue").json() == {"queue_running": [], "queue_pending": []}
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
