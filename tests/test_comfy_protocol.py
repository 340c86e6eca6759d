"""ComfyUI's websocket protocol as its own clients rely on it, driven over a real socket by the
websocket-client library, the way ComfyUI's script_examples/websockets_api_example.py and
websockets_api_example_ws_images.py drive it: read until `executing` with node null for the prompt,
then read /history/{id}; or collect the binary frames sent while SaveImageWebsocket executes.

A client that hangs is the failure these tests exist for, so every socket read has a timeout."""
from __future__ import annotations

import copy
import io
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image

from inkwash.nodes.declare import Node, Result, String
from inkwash.nodes.registry import core_nodes
from inkwash.webui.comfy_api import router
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.jobs import JobQueue

websocket = pytest.importorskip("websocket")  # websocket-client, as ComfyUI's examples use

CKPT = "tiny-sd1.safetensors"
READ_TIMEOUT = 120  # seconds a client waits for one message before the test calls it a hang


def txt2img(seed: int = 5, batch_size: int = 1, negative: str = "bad hands") -> dict:
    """The examples' workflow, on the tiny checkpoint at 64x64 with 2 steps."""
    return {
        "3": {"class_type": "KSampler", "inputs": {
            "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
            "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal", "seed": seed, "steps": 2}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": batch_size, "height": 64, "width": 64}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "masterpiece best quality man"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": negative}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


class Hold(Node):
    """Runs until interrupted (or 60 s), so a test can interrupt a prompt that is surely running."""

    inputs = (String("label", default="held"),)
    output_node = True
    entered = threading.Event()

    def run(self, label):
        Hold.entered.set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.ctx.check_interrupt()
            time.sleep(0.01)
        return Result(ui={"text": [label]})


class Label(Node):
    """An output node that only records its label, for queue-order tests."""

    inputs = (String("label", default="x"),)
    output_node = True

    def run(self, label):
        return Result(ui={"text": [label]})


def label(text: str) -> dict:
    return {"1": {"class_type": "Label", "inputs": {"label": text}}}


class Server:
    """The ComfyUI routes on a real port, served by uvicorn in a thread."""

    def __init__(self, folders, data_dir, preview_method: str = "none"):
        registry = {**core_nodes(), "Hold": Hold, "Label": Label}
        self.hub = EventHub()
        self.queue = JobQueue(data_dir / "jobs.sqlite3", registry, self.hub)
        ctx = ServerContext(queue=self.queue, hub=self.hub, folders=folders, registry=registry,
                            data_dir=data_dir, preview_method=preview_method)
        app = FastAPI()
        app.include_router(router(ctx))
        app.include_router(router(ctx), prefix="/api")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def close(self):
        self._server.should_exit = True
        self._thread.join(10)
        self.queue.close()

    # -- the examples' client, function for function ------------------------------------------------
    def queue_prompt(self, prompt, client_id, path="/prompt", **body):
        p = {"prompt": prompt, "client_id": client_id, **body}
        data = json.dumps(p).encode("utf-8")
        req = urllib.request.Request("http://{}{}".format(self.address, path), data=data)
        return json.loads(urllib.request.urlopen(req).read())

    def get_image(self, filename, subfolder, folder_type):
        data = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        url_values = urllib.parse.urlencode(data)
        with urllib.request.urlopen("http://{}/view?{}".format(self.address, url_values)) as response:
            return response.read()

    def get_history(self, prompt_id):
        with urllib.request.urlopen("http://{}/history/{}".format(self.address, prompt_id)) as response:
            return json.loads(response.read())

    def get_json(self, path):
        with urllib.request.urlopen("http://{}{}".format(self.address, path)) as response:
            return json.loads(response.read())

    def post(self, path, body):
        req = urllib.request.Request("http://{}{}".format(self.address, path), data=json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def connect(self, client_id):
        ws = websocket.WebSocket()
        ws.connect("ws://{}/ws?clientId={}".format(self.address, client_id))
        ws.settimeout(READ_TIMEOUT)
        return ws


def read_until_done(ws, prompt_id) -> list:
    """websockets_api_example.py's loop, keeping what it reads: stop on `executing` null."""
    received = []
    while True:
        out = ws.recv()
        received.append(out)
        if isinstance(out, str):
            message = json.loads(out)
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    return received  # Execution is done


def messages(received) -> list[dict]:
    return [json.loads(out) for out in received if isinstance(out, str)]


def run_to_the_end(server, prompt, while_running=None) -> tuple[list[dict], dict]:
    """Queue `prompt`, read its messages to `executing` null, then its /history entry at once."""
    client_id = str(uuid.uuid4())
    ws = server.connect(client_id)
    try:
        prompt_id = server.queue_prompt(prompt, client_id)["prompt_id"]
        if while_running is not None:
            while_running(prompt_id)
        received = messages(read_until_done(ws, prompt_id))
        return received, server.get_history(prompt_id)[prompt_id]
    finally:
        ws.close()


def assert_ends_with(received: list[dict], outcome: str) -> None:
    names = [m["type"] for m in received if m["type"] not in ("status", "progress")]
    assert names[-2:] == [outcome, "executing"], names
    assert received[-1]["data"]["node"] is None


@pytest.fixture
def serve(folders, tmp_path, one_thread):
    servers = []

    def start(**options) -> Server:
        servers.append(Server(folders, tmp_path / f"data{len(servers)}", **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def server(serve):
    server = serve()
    server.queue.start()
    return server


# -- 1. every prompt ends with `executing` null, after its history is written ---------------------------

def test_websockets_api_example_finds_the_history_of_every_prompt(server, checkpoint):
    client_id = str(uuid.uuid4())
    ws = server.connect(client_id)
    try:
        for seed in (5, 6, 7):  # each run: the example's get_images, exactly
            prompt = txt2img(seed)
            prompt_id = server.queue_prompt(prompt, client_id)["prompt_id"]
            received = read_until_done(ws, prompt_id)
            history = server.get_history(prompt_id)[prompt_id]  # read the moment `executing` null arrived
            images = [server.get_image(i["filename"], i["subfolder"], i["type"])
                      for i in history["outputs"]["9"]["images"]]
            assert [Image.open(io.BytesIO(data)).size for data in images] == [(64, 64)]
            assert_ends_with(messages(received), "execution_success")
            assert history["status"]["status_str"] == "success"
    finally:
        ws.close()


def test_a_failed_prompt_ends_with_execution_error_then_executing_null(server, checkpoint, folders):
    (folders.models_dir / "checkpoints" / "broken.safetensors").write_bytes(b"not a checkpoint at all")
    prompt = txt2img()
    prompt["4"]["inputs"]["ckpt_name"] = "broken.safetensors"  # valid when queued, fails when loaded
    received, history = run_to_the_end(server, prompt)
    assert_ends_with(received, "execution_error")
    error = next(m["data"] for m in received if m["type"] == "execution_error")
    assert error["node_id"] == "4" and error["node_type"] == "CheckpointLoaderSimple"
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1][0] == "execution_error"


def test_an_interrupted_prompt_ends_with_execution_interrupted_then_executing_null(server):
    Hold.entered.clear()

    def interrupt(prompt_id):
        assert Hold.entered.wait(30)
        assert server.post("/interrupt", {"prompt_id": prompt_id})[0] == 200

    received, history = run_to_the_end(server, {"1": {"class_type": "Hold", "inputs": {"label": "held"}}}, interrupt)
    assert_ends_with(received, "execution_interrupted")
    assert history["status"]["status_str"] == "error"
    assert history["status"]["messages"][-1][0] == "execution_interrupted"


# -- 2. a client-chosen prompt_id --------------------------------------------------------------------------

def test_client_chosen_prompt_id_is_the_jobs_id_and_a_duplicate_is_refused(server):
    client_id = str(uuid.uuid4())
    prompt_id = str(uuid.uuid4())
    ws = server.connect(client_id)
    try:
        answer = server.queue_prompt(label("mine"), client_id, prompt_id=prompt_id)
        assert answer["prompt_id"] == prompt_id
        received = messages(read_until_done(ws, prompt_id))  # waits on the id the client chose
    finally:
        ws.close()
    assert all(m["data"]["prompt_id"] == prompt_id for m in received if m["type"] not in ("status",))
    assert server.get_history(prompt_id)[prompt_id]["outputs"]["1"] == {"text": ["mine"]}

    status, body = server.post("/prompt", {"prompt": label("again"), "prompt_id": prompt_id})
    assert status == 400 and body["error"]["type"] == "duplicate_prompt_id"
    assert prompt_id in body["error"]["message"] and body["node_errors"] == {}
    for bad in ("../../etc", "", "x" * 300, 12345, "not-a-uuid"):
        status, body = server.post("/prompt", {"prompt": label("bad"), "prompt_id": bad})
        assert status == 400 and body["error"]["type"] == "invalid_prompt_id", bad
    assert len(server.get_json("/history")) == 1  # nothing refused was queued


# -- 3. number and front set the queue position ------------------------------------------------------------

def test_number_sets_the_queue_position_and_front_jumps_ahead(serve):
    server = serve()  # worker not started: everything waits in the queue
    ids = {}
    ids["first"] = server.queue_prompt(label("first"), "c")["prompt_id"]
    ids["second"] = server.queue_prompt(label("second"), "c")["prompt_id"]
    chosen = server.queue_prompt(label("between"), "c", number=1.5)
    assert chosen["number"] == 1.5
    ids["between"] = chosen["prompt_id"]
    ids["urgent"] = server.queue_prompt(label("urgent"), "c", front=True)["prompt_id"]
    ids["last"] = server.queue_prompt(label("last"), "c", number=100, front=True)["prompt_id"]  # number wins
    pending = server.get_json("/queue")["queue_pending"]
    by_id = {v: k for k, v in ids.items()}
    assert [by_id[item[1]] for item in pending] == ["urgent", "first", "between", "second", "last"]
    assert [item[0] for item in pending] == sorted(item[0] for item in pending)

    status, body = server.post("/prompt", {"prompt": label("x"), "number": "soon"})
    assert status == 400 and "number" in body["error"]["message"]

    server.queue.start()
    for prompt_id in ids.values():
        server.queue.wait(prompt_id, timeout=30)
    history = server.queue.history()
    assert [job.outputs["1"]["text"][0] for job in history] == ["urgent", "first", "between", "second", "last"]


# -- 4. sampler previews only when a preview method is on ---------------------------------------------------

SEEDS = iter(range(100, 10**6))


def frames_of(server, client_id, extra_data=None) -> list[bytes]:
    """The binary frames a client gets for one txt2img prompt (a new seed each time: nothing cached)."""
    ws = server.connect(client_id)
    try:
        body = {"extra_data": extra_data} if extra_data else {}
        prompt_id = server.queue_prompt(txt2img(seed=next(SEEDS)), client_id, **body)["prompt_id"]
        received = read_until_done(ws, prompt_id)
    finally:
        ws.close()
    progress = [m for m in messages(received) if m["type"] == "progress"]
    assert [p["data"]["value"] for p in progress] == [1, 2]  # progress is sent either way
    return [out for out in received if isinstance(out, bytes)]


def test_previews_follow_the_server_default_and_the_prompts_preview_method(serve, checkpoint):
    quiet = serve()  # ComfyUI's default: --preview-method none
    quiet.queue.start()
    assert frames_of(quiet, "a") == []
    assert frames_of(quiet, "a", {"preview_method": "default"}) == []
    frames = frames_of(quiet, "a", {"preview_method": "latent2rgb"})  # the frontend's setting
    assert len(frames) == 2
    assert all(frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01" for frame in frames)  # PREVIEW_IMAGE, JPEG
    assert Image.open(io.BytesIO(frames[-1][8:])).format == "JPEG"

    previewing = serve(preview_method="auto")  # --preview-method auto
    previewing.queue.start()
    assert len(frames_of(previewing, "b")) == 2
    assert frames_of(previewing, "b", {"preview_method": "none"}) == []


def test_a_prompt_asking_for_taesd_gets_taesd_frames(serve, checkpoint, folders):
    from tiny_models import write_tiny_taesd_decoder

    server = serve()  # --preview-method none: the prompt's setting decides
    server.queue.start()

    def sizes(frames):
        return [Image.open(io.BytesIO(frame[8:])).size for frame in frames]

    assert sizes(frames_of(server, "c", {"preview_method": "taesd"})) == [(8, 8)] * 2  # no decoder: latent2rgb
    write_tiny_taesd_decoder(folders.models_dir / "vae_approx", "taesd_decoder.pth")
    frames = frames_of(server, "c", {"preview_method": "taesd"})
    assert all(frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01" for frame in frames)  # PREVIEW_IMAGE, JPEG
    assert sizes(frames) == [(64, 64)] * 2  # the decoder's full-size image of the 64x64 prompt
    assert sizes(frames_of(server, "c", {"preview_method": "latent2rgb"})) == [(8, 8)] * 2


# -- 5. SaveImageWebsocket --------------------------------------------------------------------------------

def test_websockets_api_example_ws_images_gets_the_full_images(server, checkpoint, folders):
    prompt = txt2img(batch_size=2)
    prompt["save_image_websocket_node"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}
    client_id = str(uuid.uuid4())
    ws = server.connect(client_id)
    try:
        # the example's get_images, exactly (it posts to /api/prompt)
        prompt_id = server.queue_prompt(prompt, client_id, path="/api/prompt")["prompt_id"]
        output_images = {}
        current_node = ""
        while True:
            out = ws.recv()
            if isinstance(out, str):
                message = json.loads(out)
                if message["type"] == "executing":
                    data = message["data"]
                    if data["prompt_id"] == prompt_id:
                        if data["node"] is None:
                            break  # Execution is done
                        else:
                            current_node = data["node"]
            else:
                if current_node == "save_image_websocket_node":
                    images_output = output_images.get(current_node, [])
                    images_output.append(out[8:])
                    output_images[current_node] = images_output
    finally:
        ws.close()

    streamed = [Image.open(io.BytesIO(data)) for data in output_images["save_image_websocket_node"]]
    assert [(image.format, image.size) for image in streamed] == [("PNG", (64, 64))] * 2
    saved = server.get_history(prompt_id)[prompt_id]["outputs"]["9"]["images"]
    for image, ref in zip(streamed, saved):  # the same pixels SaveImage wrote
        on_disk = Image.open(folders.output_dir / ref["subfolder"] / ref["filename"])
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(on_disk.convert("RGB")))
    assert "save_image_websocket_node" not in server.get_history(prompt_id)[prompt_id]["outputs"]


def test_save_image_websocket_runs_again_on_a_repeated_prompt(server, checkpoint):
    prompt = txt2img()
    del prompt["9"]
    prompt["ws"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}
    client_id = str(uuid.uuid4())
    ws = server.connect(client_id)
    try:
        counts = []
        for _ in range(2):  # the second run has everything cached but must still send the image
            prompt_id = server.queue_prompt(prompt, client_id)["prompt_id"]
            received = read_until_done(ws, prompt_id)
            frames = [out for out in received if isinstance(out, bytes)]
            assert all(frame[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02" for frame in frames)  # PNG
            counts.append(len(frames))
    finally:
        ws.close()
    assert counts == [1, 1]


# -- 6. a missing embedding is a warning, a missing LoRA file is invalid -----------------------------------

def test_missing_embedding_warns_in_the_messages_and_log_and_encodes_without_it(server, checkpoint, folders, caplog):
    client_id = str(uuid.uuid4())
    ws = server.connect(client_id)
    try:
        with caplog.at_level(logging.WARNING, logger="inkwash.nodes"):
            with_reference = server.queue_prompt(txt2img(negative="embedding:EasyNegative bad hands"), client_id)
            received = messages(read_until_done(ws, with_reference["prompt_id"]))
        plain = server.queue_prompt(txt2img(negative="bad hands"), client_id)
        read_until_done(ws, plain["prompt_id"])
    finally:
        ws.close()
    entry = server.get_history(with_reference["prompt_id"])[with_reference["prompt_id"]]
    assert entry["status"]["status_str"] == "success"
    warnings = [data for name, data in entry["status"]["messages"] if name == "execution_warning"]
    assert len(warnings) == 1 and "'EasyNegative' not found" in warnings[0]["message"]
    assert warnings[0]["node_id"] == "7"
    assert [m["data"]["message"] for m in received if m["type"] == "execution_warning"] == [warnings[0]["message"]]
    assert any("EasyNegative" in r.getMessage() for r in caplog.records)

    def pixels(prompt_id):
        ref = server.get_history(prompt_id)[prompt_id]["outputs"]["9"]["images"][0]
        return np.asarray(Image.open(folders.output_dir / ref["subfolder"] / ref["filename"]))
    assert np.array_equal(pixels(with_reference["prompt_id"]), pixels(plain["prompt_id"]))


def test_lora_loader_with_a_missing_file_fails_validation(server, checkpoint):
    prompt = txt2img()
    prompt["10"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["4", 0], "clip": ["4", 1], "lora_name": "missing.safetensors",
        "strength_model": 1.0, "strength_clip": 1.0}}
    prompt["3"]["inputs"]["model"] = ["10", 0]
    status, body = server.post("/prompt", {"prompt": copy.deepcopy(prompt)})
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    error, = body["node_errors"]["10"]["errors"]
    assert error["type"] == "value_not_in_list" and "missing.safetensors" in error["details"]


def test_preview_method_flag_reaches_the_server_context(folders, tmp_path):
    from inkwash.webui.cli import build_parser
    from inkwash.webui.serve_options import resolve
    from inkwash.webui.server import create_context

    def options(*flags):
        paths = ["--data-dir", str(tmp_path / "data"), "--models-dir", str(folders.models_dir),
                 "--output-dir", str(folders.output_dir), "--input-dir", str(folders.input_dir)]
        return resolve(build_parser().parse_args(["serve", *paths, *flags]))

    assert options().preview_method == "none"  # ComfyUI's default
    chosen = options("--preview-method", "latent2rgb")
    ctx = create_context(chosen)
    try:
        assert ctx.preview_method == "latent2rgb"
    finally:
        ctx.queue.close()
    with pytest.raises(SystemExit):
        options("--preview-method", "sometimes")
