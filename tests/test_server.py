"""The assembled server: every door submits to one queue, many clients at once, credentials on every
route, a corpus of bad requests answered with 4xx while the server keeps serving, and a killed server
that restarts with its pending jobs and history intact."""
import base64
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from inkwash.nodes.runtime.checkpoint_save import save_checkpoint
from inkwash.webui.auth import Credentials
from inkwash.webui.serve_options import ServeOptions
from inkwash.webui.server import create_app, create_context
from starlette.websockets import WebSocketDisconnect
from tiny_models import tiny_sd1

REPO = Path(__file__).resolve().parent.parent
CKPT = "tiny-sd1.safetensors"


def txt2img(seed: int = 1, steps: int = 2, prompt: str = "a red circle") -> dict:
    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    workflow["4"]["inputs"]["ckpt_name"] = CKPT
    workflow["5"]["inputs"].update(width=64, height=64, batch_size=1)
    workflow["3"]["inputs"].update(seed=seed, steps=steps)
    workflow["6"]["inputs"]["text"] = prompt
    return workflow


@pytest.fixture
def options(folders, tmp_path):
    path = folders.models_dir / "checkpoints" / CKPT
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, *tiny_sd1())
    return ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir, input_dir=folders.input_dir,
                        data_dir=tmp_path / "data")


def client_for(options: ServeOptions) -> TestClient:
    ctx = create_context(options)
    # The tabs are tested on their own (test_tabs.py); here the routes and the middleware matter.
    return TestClient(create_app(ctx, options, with_ui=False), base_url="http://127.0.0.1:7860")


def wait_history(client, count: int, timeout: float = 120, **auth) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = client.get("/history", **auth).json()
        done = [h for h in history.values() if h["status"]["completed"] or h["status"]["status_str"] == "error"]
        if len(done) >= count:
            return history
        time.sleep(0.1)
    raise AssertionError(f"history holds {len(history)} of {count} jobs after {timeout} s")


def test_every_door_submits_to_the_one_queue(options):
    with client_for(options) as client:
        comfy = client.post("/prompt", json={"prompt": txt2img(seed=5), "client_id": "c"})
        assert comfy.status_code == 200, comfy.text
        a1111 = client.post("/sdapi/v1/txt2img", json={"prompt": "a blue square", "steps": 2, "width": 64,
                                                       "height": 64, "seed": 9,
                                                       "override_settings": {"sd_model_checkpoint": CKPT}})
        assert a1111.status_code == 200, a1111.text
        assert len(a1111.json()["images"]) == 1
        history = wait_history(client, 2)
        assert comfy.json()["prompt_id"] in history
        sources = sorted(entry["prompt"][3].get("source") for entry in history.values())
        assert sources == ["a1111", "comfy"]
        numbers = [entry["prompt"][0] for entry in history.values()]
        assert len(set(numbers)) == 2  # one numbering: one queue


def test_eight_clients_with_five_jobs_each_all_finish(options):
    with client_for(options) as client:
        ids: list[str] = []
        failures: list[str] = []
        lock = threading.Lock()

        def client_session(n: int) -> None:
            for k in range(5):
                response = client.post("/api/prompt", json={"prompt": txt2img(seed=100 * n + k),
                                                            "client_id": f"client-{n}"})
                with lock:
                    if response.status_code == 200:
                        ids.append(response.json()["prompt_id"])
                    else:
                        failures.append(response.text)

        threads = [threading.Thread(target=client_session, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures and len(set(ids)) == 40
        history = wait_history(client, 40, timeout=300)
        assert set(ids) <= set(history)
        assert all(history[i]["status"]["status_str"] == "success" for i in ids)
        images = [img for i in ids for out in history[i]["outputs"].values() for img in out.get("images", [])]
        assert len(images) == 40 and len({img["filename"] for img in images}) == 40


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_with_credentials_every_route_needs_them(options):
    options.credentials = Credentials.from_auth_args("ann:s3cret", iterations=1000)
    good, wrong = basic("ann", "s3cret"), basic("ann", "guess")
    routes = ["/prompt", "/api/queue", "/history", "/object_info/KSampler", "/system_stats",
              "/view?filename=x.png&type=output", "/sdapi/v1/sd-models", "/sdapi/v1/progress", "/graph/"]
    with client_for(options) as client:
        for route in routes:
            assert client.get(route).status_code == 401, route
            assert client.get(route, headers=wrong).status_code == 401, route
            assert client.get(route, headers=good).status_code in (200, 404), route  # 404: x.png is absent
        page = client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
        assert page.status_code in (302, 303) and page.headers["location"].startswith("/login")
        assert client.post("/prompt", json={"prompt": txt2img()}).status_code == 401
        host = {"Host": "127.0.0.1:7860"}  # the websocket test client names its own host otherwise
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws?clientId=x", headers=host):
            pass
        assert refused.value.code == 4401
        with client.websocket_connect("/ws?clientId=x", headers={**host, **good}) as ws:
            assert ws.receive_json()["type"] == "status"
        for route in routes:
            body = client.get(route, headers=good).text
            assert "s3cret" not in body and "ann:s3cret" not in body


# Each: (method, path, keyword arguments for the request). All must get a 4xx, never a 5xx.
def bad_requests(checkpoint_workflow: dict) -> list[tuple[str, str, dict]]:
    huge = copy.deepcopy(checkpoint_workflow)
    huge["5"]["inputs"].update(width=16384, height=16384)
    many = copy.deepcopy(checkpoint_workflow)
    many["5"]["inputs"]["batch_size"] = 4096
    unknown = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    wrong_type = copy.deepcopy(checkpoint_workflow)
    wrong_type["3"]["inputs"]["steps"] = "many"
    cycle = {"1": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["2", 0]}},
             "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["1", 0]}}}
    return [
        ("POST", "/prompt", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/prompt", {"json": ["a", "list"]}),
        ("POST", "/prompt", {"json": {"prompt": "text"}}),
        ("POST", "/prompt", {"json": {"prompt": unknown}}),
        ("POST", "/prompt", {"json": {"prompt": wrong_type}}),
        ("POST", "/prompt", {"json": {"prompt": cycle}}),
        ("POST", "/prompt", {"json": {"prompt": huge}}),
        ("POST", "/prompt", {"json": {"prompt": many}}),
        ("POST", "/api/prompt", {"json": {"prompt": checkpoint_workflow},
                                 "headers": {"Origin": "http://evil.example.com"}}),
        ("GET", "/queue", {"headers": {"Host": "evil.example.com"}}),
        ("GET", "/view?filename=../../etc/passwd&type=output", {}),
        ("GET", "/view?filename=x.png&subfolder=../..&type=output", {}),
        ("GET", "/view?filename=/etc/passwd&type=input", {}),
        ("GET", "/view?filename=x.png&type=secrets", {}),
        ("POST", "/upload/image", {"files": {"image": ("../evil.png", b"\x89PNG not really", "image/png")}}),
        ("POST", "/upload/image", {"files": {"image": ("notes.txt", b"hello", "text/plain")}}),
        ("POST", "/sdapi/v1/txt2img", {"json": {"prompt": "x", "width": 100000, "height": 100000}}),
        ("POST", "/sdapi/v1/txt2img", {"json": {"prompt": "x", "batch_size": 10000}}),
        ("POST", "/sdapi/v1/txt2img", {"json": {"prompt": "x", "steps": "lots"}}),
        ("POST", "/sdapi/v1/txt2img", {"json": {"prompt": "x", "sampler_name": "No Such Sampler"}}),
        ("POST", "/sdapi/v1/img2img", {"json": {"prompt": "x", "init_images": ["!!!not base64!!!"]}}),
        ("POST", "/sdapi/v1/img2img", {"json": {"prompt": "x", "init_images": [base64.b64encode(b"plain text").decode()]}}),
        ("POST", "/sdapi/v1/png-info", {"json": {"image": "%%%"}}),
        ("POST", "/sdapi/v1/options", {"json": {"sd_model_checkpoint": "../../etc/passwd"}}),
        ("GET", "/models/../../etc", {}),
    ]


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(options, folders):
    (folders.output_dir / "x.png").write_bytes(b"")  # a name that exists, for the traversal cases
    with client_for(options) as client:
        for method, path, kwargs in bad_requests(txt2img()):
            response = client.request(method, path, **kwargs)
            assert 400 <= response.status_code < 500, (method, path, response.status_code, response.text[:300])
            assert response.text.strip(), (method, path)  # says what is wrong
            assert client.get("/object_info/KSampler").status_code == 200  # still serving
        good = client.post("/prompt", json={"prompt": txt2img(seed=3)})
        assert good.status_code == 200, good.text
        history = wait_history(client, 1)
        assert history[good.json()["prompt_id"]]["status"]["status_str"] == "success"


# -- a real process, killed and restarted ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(options: ServeOptions, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "inkwash.webui.cli", "serve", "--port", str(port),
               "--models-dir", str(options.models_dir), "--output-dir", str(options.output_dir),
               "--input-dir", str(options.input_dir), "--data-dir", str(options.data_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/system_stats", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("server did not start in 120 s")


def test_killed_server_restarts_with_pending_jobs_and_history(options):
    options.data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(options, port)
    try:
        first = httpx.post(f"{base}/prompt", json={"prompt": txt2img(seed=1)}).json()["prompt_id"]
        deadline = time.monotonic() + 60
        while first not in httpx.get(f"{base}/history").json():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Long enough that the kill lands while they are queued or running.
        pending = [httpx.post(f"{base}/prompt", json={"prompt": txt2img(seed=10 + i, steps=30)}).json()["prompt_id"]
                   for i in range(3)]
        while not httpx.get(f"{base}/queue").json()["queue_running"]:
            time.sleep(0.05)
        unfinished = set(pending) - set(httpx.get(f"{base}/history").json())
        assert unfinished  # the kill below lands with work left
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()

    server = start_server(options, port)
    try:
        deadline = time.monotonic() + 180
        while True:
            history = httpx.get(f"{base}/history").json()
            if all(i in history for i in pending):
                break
            assert time.monotonic() < deadline, "pending jobs did not run after the restart"
            time.sleep(0.2)
        assert first in history  # finished before the kill, still there
        assert all(history[i]["status"]["status_str"] == "success" for i in [first, *pending])
        files = sorted(p.name for p in Path(options.output_dir).rglob("*") if p.is_file())
        assert len([f for f in files if f.endswith(".png")]) == 4
        assert not [f for f in files if not f.endswith(".png")]  # no half-written leftovers
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
