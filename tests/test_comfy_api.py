"""ComfyUI's HTTP and websocket API, driven as a ComfyUI client drives it, against the real queue and
the real core nodes on a tiny SD1-shaped checkpoint."""
import copy
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from starlette.testclient import TestClient

from inkwash.nodes.formats.png_metadata import read_png_metadata
from inkwash.webui.comfy_api import router
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.jobs import JobQueue

CKPT = "tiny-sd1.safetensors"
TXT2IMG = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 8, "denoise": 1, "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
        "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal", "seed": 8566257, "steps": 2}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 64, "width": 64}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a lighthouse at dusk"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}
UI_WORKFLOW = {"last_node_id": 9, "nodes": [], "links": [], "version": 0.4}


def copy_of_image(name: str) -> dict:
    """LoadImage -> SaveImage: a workflow that needs no model."""
    return {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "copy"}}}


@pytest.fixture
def server(folders, registry, tmp_path):
    """(client, queue, folders) for an app holding just the ComfyUI router, at "" and "/api"; the worker
    is started by the test (`queue.start()`) when it wants jobs to run."""
    hub = EventHub()
    queue = JobQueue(tmp_path / "data" / "jobs.db", registry, hub)
    ctx = ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=tmp_path / "data")
    app = FastAPI()
    app.include_router(router(ctx))
    app.include_router(router(ctx), prefix="/api")
    with TestClient(app) as client:
        yield client, queue, folders
    queue.close()


def png_bytes(color=(200, 30, 30, 255), size=(16, 16), mode="RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring a width x height canvas, with almost no pixel data: the shape of a
    decompression bomb, without the bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def upload(client, name, data, **fields):
    return client.post("/upload/image", files={"image": (name, data, "image/png")},
                       data={k: str(v) for k, v in fields.items()})


def messages_until_done(ws, prompt_id):
    """Websocket messages (JSON dicts, or bytes for binary frames) up to this prompt's end (`executing`
    with node null). Call it once the job is done, so every message is already on its way and no read
    can block forever."""
    received = []
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            received.append(message["bytes"])
            continue
        data = json.loads(message["text"])
        received.append(data)
        if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
            return received  # ComfyUI's end of a prompt, whatever its outcome


def test_comfyui_client_flow_websocket_prompt_history_view(server, checkpoint):
    client, queue, _ = server
    queue.start()
    with client.websocket_connect("/ws?clientId=client-1") as ws:
        hello = ws.receive_json()
        assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                    "sid": "client-1"}}
        posted = client.post("/prompt", json={"prompt": TXT2IMG, "client_id": "client-1", "extra_data": {
            "extra_pnginfo": {"workflow": UI_WORKFLOW}, "preview_method": "auto"}})
        assert posted.status_code == 200, posted.text
        body = posted.json()
        prompt_id = body["prompt_id"]
        assert body["node_errors"] == {} and isinstance(body["number"], int)
        assert queue.wait(prompt_id, timeout=300).status == "success"
        received = messages_until_done(ws, prompt_id)

    events = [m for m in received if isinstance(m, dict)]
    names = [m["type"] for m in events if m["type"] != "status"]
    assert names[0] == "execution_start" and names[-2:] == ["execution_success", "executing"]
    assert {"execution_cached", "executing", "progress", "executed"} <= set(names)
    progress = [m["data"] for m in events if m["type"] == "progress"]
    assert [p["value"] for p in progress] == [1, 2] and all("preview" not in p for p in progress)
    assert progress[0] == {"value": 1, "max": 2, "node": "3", "prompt_id": prompt_id}
    executed = next(m["data"] for m in events if m["type"] == "executed")
    assert executed["node"] == "9" and executed["output"]["images"][0]["type"] == "output"
    assert events[-1]["data"] == {"node": None, "display_node": None, "prompt_id": prompt_id}

    frames = [m for m in received if isinstance(m, bytes)]
    assert frames, "no binary preview frame"
    assert struct.unpack(">II", frames[-1][:8]) == (1, 1)  # PREVIEW_IMAGE, JPEG
    assert Image.open(io.BytesIO(frames[-1][8:])).format == "JPEG"

    history = client.get(f"/history/{prompt_id}").json()
    entry = history[prompt_id]
    number, listed_id, prompt, extra_data, outputs_to_execute = entry["prompt"]
    assert isinstance(number, int)
    assert (listed_id, prompt, outputs_to_execute) == (prompt_id, TXT2IMG, ["9"])
    assert extra_data["client_id"] == "client-1" and extra_data["extra_pnginfo"] == {"workflow": UI_WORKFLOW}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["status"]["messages"][0][0] == "execution_start"
    assert entry["meta"]["9"]["node_id"] == "9"
    assert client.get("/api/history/" + prompt_id).json() == history
    assert prompt_id in client.get("/history", params={"max_items": 1}).json()

    image_ref = entry["outputs"]["9"]["images"][0]
    viewed = client.get("/view", params=image_ref)
    assert viewed.status_code == 200 and viewed.headers["content-type"] == "image/png"
    metadata = read_png_metadata(viewed.content)
    assert metadata["prompt"] == TXT2IMG and metadata["workflow"] == UI_WORKFLOW
    assert Image.open(io.BytesIO(viewed.content)).size == (64, 64)
    preview = client.get("/api/view", params={**image_ref, "preview": "webp;50"})
    assert preview.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(preview.content)).format == "WEBP"
    rgb = client.get("/view", params={**image_ref, "channel": "rgb"})
    assert Image.open(io.BytesIO(rgb.content)).mode == "RGB"

    client.post("/history", json={"delete": [prompt_id]})
    assert client.get(f"/history/{prompt_id}").json() == {}


def test_invalid_workflow_gets_comfyui_node_errors_then_a_good_one_queues(server, checkpoint):
    client, _, _ = server
    bad = copy.deepcopy(TXT2IMG)
    bad["3"]["inputs"]["steps"] = 0
    bad["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    response = client.post("/prompt", json={"prompt": bad})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"3", "4"}
    assert body["node_errors"]["3"]["errors"][0]["type"] == "value_smaller_than_min"
    assert body["node_errors"]["4"]["class_type"] == "CheckpointLoaderSimple"
    assert body["node_errors"]["4"]["dependent_outputs"] == ["9"]

    too_big = copy.deepcopy(TXT2IMG)
    too_big["5"]["inputs"].update(width=8192, height=8192)
    response = client.post("/prompt", json={"prompt": too_big})
    assert response.status_code == 400 and "5" in response.json()["node_errors"]

    assert client.post("/prompt", json={"prompt": TXT2IMG}).status_code == 200
    assert client.get("/prompt").json() == {"exec_info": {"queue_remaining": 1}}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"client_id": "x"}', b'{"prompt": "text"}'])
def test_malformed_post_prompt_is_a_clear_400_then_a_good_one_works(server, checkpoint, body):
    client, _, _ = server
    response = client.post("/prompt", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()
    assert error["node_errors"] == {} and error["error"]["message"]
    assert client.post("/api/prompt", json={"prompt": TXT2IMG}).status_code == 200


def test_queue_lists_deletes_and_clears_pending_jobs(server, checkpoint):
    client, _, _ = server  # worker not started: jobs stay pending
    ids = [client.post("/prompt", json={"prompt": TXT2IMG, "client_id": "c"}).json()["prompt_id"] for _ in range(3)]
    urgent = client.post("/prompt", json={"prompt": TXT2IMG, "front": True}).json()
    listed = client.get("/queue").json()
    assert listed["queue_running"] == []
    pending = listed["queue_pending"]
    assert [item[1] for item in pending] == [urgent["prompt_id"], *ids]  # front jumps the queue
    assert pending[1][2] == TXT2IMG and pending[1][3]["client_id"] == "c" and pending[1][4] == ["9"]

    assert client.post("/queue", json={"delete": [ids[0]]}).status_code == 200
    assert [item[1] for item in client.get("/queue").json()["queue_pending"]] == [urgent["prompt_id"], *ids[1:]]
    assert client.post("/queue", json={"delete": ids[0]}).status_code == 400
    assert client.post("/queue", content=b"nope").status_code == 400
    assert client.post("/queue", json={"clear": True}).status_code == 200
    assert client.get("/api/queue").json() == {"queue_running": [], "queue_pending": []}
    assert client.get("/prompt").json()["exec_info"]["queue_remaining"] == 0
    assert client.get(f"/history/{ids[0]}").json() == {}  # removed before running: never history


def test_view_refuses_traversal_absolute_names_symlinks_and_unknown_types(server, tmp_path):
    client, _, folders = server
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (folders.output_dir / "ok.png").write_bytes(png_bytes())
    (folders.output_dir / "link.png").symlink_to(secret)
    (folders.output_dir / "escape").symlink_to(tmp_path)
    (folders.output_dir / "page.html").write_text("<script>alert(1)</script>")

    refused = {
        "../secret.png": ({"filename": "../secret.png"}, 400),
        "absolute": ({"filename": str(secret)}, 400),
        "subfolder ..": ({"filename": "secret.png", "subfolder": ".."}, 403),
        "absolute subfolder": ({"filename": "secret.png", "subfolder": str(tmp_path)}, 403),
        "symlinked file": ({"filename": "link.png"}, 403),
        "symlinked folder": ({"filename": "secret.png", "subfolder": "escape"}, 403),
        "unknown type": ({"filename": "ok.png", "type": "models"}, 400),
        "missing": ({"filename": "nope.png"}, 404),
        "no filename": ({}, 400),
    }
    for case, (params, status) in refused.items():
        response = client.get("/view", params=params)
        assert response.status_code == status, case
        assert response.content != secret.read_bytes(), case
        good = client.get("/view", params={"filename": "ok.png", "type": "output"})
        assert good.status_code == 200 and good.content == png_bytes(), case
    html = client.get("/view", params={"filename": "page.html"})
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment")


def test_uploaded_image_is_deduplicated_and_used_by_loadimage(server):
    client, queue, folders = server
    red, blue = png_bytes((255, 0, 0, 255)), png_bytes((0, 0, 255, 255))
    assert upload(client, "pic.png", red).json() == {"name": "pic.png", "subfolder": "", "type": "input"}
    assert upload(client, "pic.png", red).json()["name"] == "pic.png"  # same bytes: reused
    assert upload(client, "pic.png", blue).json()["name"] == "pic (1).png"
    assert upload(client, "pic.png", blue, overwrite="true").json()["name"] == "pic.png"
    assert (folders.input_dir / "pic.png").read_bytes() == blue
    assert upload(client, "pic.png", red, subfolder="sets").json() == {
        "name": "pic.png", "subfolder": "sets", "type": "input"}

    queue.start()
    prompt_id = client.post("/prompt", json={"prompt": copy_of_image("sets/pic.png")}).json()["prompt_id"]
    assert queue.wait(prompt_id, timeout=120).status == "success"
    saved = client.get(f"/history/{prompt_id}").json()[prompt_id]["outputs"]["2"]["images"][0]
    pixels = np.asarray(Image.open(io.BytesIO(client.get("/view", params=saved).content)))
    assert tuple(pixels[0, 0]) == (255, 0, 0)


def test_uploads_that_are_not_safe_images_are_refused(server):
    client, _, folders = server
    refused = {
        "not an image": (upload(client, "x.png", b"hello, not a png"), 400),
        "truncated": (upload(client, "t.png", png_bytes()[:60]), 400),
        "bomb": (upload(client, "bomb.png", png_header_only(100_000, 100_000)), 413),
        "over the pixel cap": (upload(client, "big.png", png_header_only(9000, 9000)), 413),
        "traversal name": (upload(client, "../evil.png", png_bytes()), 400),
        "traversal subfolder": (upload(client, "ok.png", png_bytes(), subfolder="../.."), 403),
        "html": (upload(client, "page.html", png_bytes()), 400),
        "unknown type": (upload(client, "ok.png", png_bytes(), type="models"), 400),
        "no file": (client.post("/upload/image", data={"type": "input"}), 400),
    }
    for case, (response, status) in refused.items():
        assert response.status_code == status, (case, response.text)
        assert "error" in response.json(), case
        assert upload(client, "good.png", png_bytes()).status_code == 200, case
    assert sorted(p.name for p in folders.input_dir.iterdir()) == ["good.png"]
    assert not (folders.input_dir.parent / "evil.png").exists()


def test_upload_mask_puts_the_uploaded_alpha_on_the_original(server):
    client, _, folders = server
    original = Image.new("RGB", (8, 8), (10, 200, 30))
    buffer = io.BytesIO()
    original.save(buffer, format="PNG")
    upload(client, "photo.png", buffer.getvalue())
    mask = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 4, 8))  # left half transparent: to be inpainted
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    response = client.post("/upload/mask", files={"image": ("clipspace-mask.png", buffer.getvalue(), "image/png")},
                           data={"type": "input", "subfolder": "clipspace", "original_ref": json.dumps(
                               {"filename": "photo.png", "subfolder": "", "type": "input"})})
    assert response.json() == {"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}
    combined = np.asarray(Image.open(folders.input_dir / "clipspace" / "clipspace-mask.png"))
    assert combined.shape == (8, 8, 4)
    assert (combined[:, :4, 3] == 0).all() and (combined[:, 4:, 3] == 255).all()
    assert (combined[..., :3] == (10, 200, 30)).all()

    escape = client.post("/upload/mask", files={"image": ("m.png", buffer.getvalue(), "image/png")},
                         data={"original_ref": json.dumps({"filename": "../photo.png", "type": "input"})})
    assert escape.status_code == 400
    missing = client.post("/upload/mask", files={"image": ("m.png", buffer.getvalue(), "image/png")},
                          data={"original_ref": json.dumps({"filename": "gone.png", "type": "input"})})
    assert missing.status_code == 404


def test_interrupt_stops_only_the_named_prompt(server, checkpoint):
    client, queue, _ = server
    long_run = copy.deepcopy(TXT2IMG)
    long_run["3"]["inputs"]["steps"] = 10000
    queue.start()
    prompt_id = client.post("/prompt", json={"prompt": long_run}).json()["prompt_id"]
    deadline = time.time() + 120
    while queue.progress.value < 1:  # sampling has begun
        assert time.time() < deadline and not queue.get(prompt_id).done
        time.sleep(0.05)
    assert client.post("/interrupt", json={"prompt_id": "someone-else"}).status_code == 200
    time.sleep(0.5)
    assert client.get("/queue").json()["queue_running"][0][1] == prompt_id
    assert client.post("/interrupt", json={"prompt_id": prompt_id}).status_code == 200
    assert queue.wait(prompt_id, timeout=120).status == "interrupted"
    entry = client.get(f"/history/{prompt_id}").json()[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
    assert client.post("/interrupt", content=b"").status_code == 200  # nothing running: a no-op


def test_client_that_disconnects_mid_run_does_not_disturb_the_worker(server, registry):
    client, queue, folders = server
    (folders.input_dir / "a.png").write_bytes(png_bytes())
    queue.start()
    with client.websocket_connect("/ws") as ws:
        sid = ws.receive_json()["data"]["sid"]
        assert sid  # generated when the client sends none
        prompt_id = client.post("/prompt", json={"prompt": copy_of_image("a.png"), "client_id": sid}).json()[
            "prompt_id"]
    assert queue.wait(prompt_id, timeout=120).status == "success"
    deadline = time.time() + 10
    while queue.hub.subscriber_count() and time.time() < deadline:
        time.sleep(0.05)
    assert queue.hub.subscriber_count() == 0
    second = client.post("/prompt", json={"prompt": copy_of_image("a.png"), "client_id": sid}).json()["prompt_id"]
    assert queue.wait(second, timeout=120).status == "success"


def test_history_clear_and_free(server):
    client, queue, folders = server
    (folders.input_dir / "a.png").write_bytes(png_bytes())
    queue.start()
    prompt_id = client.post("/prompt", json={"prompt": copy_of_image("a.png")}).json()["prompt_id"]
    queue.wait(prompt_id, timeout=120)
    assert queue.executor.cache_size > 0
    assert client.post("/free", json={"unload_models": True, "free_memory": True}).status_code == 200
    assert queue.executor.cache_size == 0
    assert client.get("/history?max_items=x").status_code == 400
    assert list(client.get("/history").json()) == [prompt_id]
    assert client.post("/history", json={"clear": True}).status_code == 200
    assert client.get("/history").json() == {}


def test_object_info_system_stats_and_model_lists(server, checkpoint):
    client, _, _ = server
    info = client.get("/object_info").json()
    ksampler = client.get("/api/object_info/KSampler").json()["KSampler"]
    assert info["KSampler"] == ksampler
    required = ksampler["input"]["required"]
    assert required["model"][0] == "MODEL" and required["latent_image"][0] == "LATENT"
    assert required["seed"][0] == "INT" and required["seed"][1]["min"] == 0
    assert required["steps"][1]["default"] == 20
    assert "euler" in required["sampler_name"][0] and "karras" in required["scheduler"][0]
    assert ksampler["output"] == ["LATENT"] and ksampler["category"] == "sampling"
    assert CKPT in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert client.get("/object_info/NoSuchNode").json() == {}

    stats = client.get("/system_stats").json()
    assert stats["system"]["argv"] == [] and stats["system"]["embedded_python"] is False
    assert stats["system"]["ram_total"] > 0 and stats["system"]["python_version"]
    device = stats["devices"][0]
    assert {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"} <= set(device)

    assert "checkpoints" in client.get("/models").json()
    assert client.get("/models/checkpoints").json() == [CKPT]
    assert client.get("/models/secrets").status_code == 404
    assert client.get("/embeddings").json() == []
    assert client.get("/extensions").json() == []
