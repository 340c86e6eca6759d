"""A1111's /sdapi/v1 routes on a real job queue with a tiny checkpoint: images with infotext, img2img and
inpainting, batch count x batch size, bad input refused with 4xx, png-info, options, models, progress."""
import base64
import io
import json
import shutil
import threading
import time

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from inkwash.nodes.registry import core_nodes
from inkwash.nodes.runtime.checkpoint_save import save_checkpoint
from inkwash.nodes.formats.png_metadata import parse_infotext, read_png_metadata
from inkwash.webui.a1111_api import router
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.jobs import JobQueue
from PIL import Image
from tiny_models import tiny_sd1

CKPT = "tiny-sd1.safetensors"
SMALL = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 2, "width": 64, "height": 64,
         "sampler_name": "Euler a", "cfg_scale": 6, "seed": 42}


@pytest.fixture
def ctx(folders, tmp_path):
    path = folders.models_dir / "checkpoints" / CKPT
    path.parent.mkdir(parents=True)
    save_checkpoint(path, *tiny_sd1())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    registry, hub = core_nodes(), EventHub()
    queue = JobQueue(data_dir / "jobs.db", registry, hub)
    queue.start()
    yield ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=data_dir,
                        max_upload_bytes=2 * 2**20, max_pixels=512 * 512)
    queue.close()


def client_for(ctx) -> TestClient:
    app = FastAPI()
    app.include_router(router(ctx))
    return TestClient(app)


@pytest.fixture
def client(ctx):
    with client_for(ctx) as test_client:
        yield test_client


def png_b64(image: Image.Image, data_url: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{encoded}" if data_url else encoded


def decode(encoded: str) -> tuple[Image.Image, bytes]:
    raw = base64.b64decode(encoded)
    return Image.open(io.BytesIO(raw)), raw


def gradient(width=64, height=64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None].repeat(width, 1)
    return Image.fromarray(np.concatenate([x, y, np.full_like(x, 90)], axis=-1))


def test_txt2img_returns_pngs_with_infotext_for_batch_count_times_batch_size(client, ctx):
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "batch_size": 2, "n_iter": 2, "save_images": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 4
    info = json.loads(body["info"])
    assert info["all_seeds"] == [42, 43, 44, 45] and info["seed"] == 42
    assert info["sampler_name"] == "Euler a" and info["steps"] == 2 and info["cfg_scale"] == 6
    assert info["sd_model_name"] == "tiny-sd1" and len(info["sd_model_hash"]) == 10
    assert info["width"] == info["height"] == 64 and info["batch_size"] == 2
    assert len(info["infotexts"]) == 4 and info["all_prompts"] == ["a red circle"] * 4
    for encoded, seed, infotext in zip(body["images"], info["all_seeds"], info["infotexts"]):
        image, raw = decode(encoded)
        assert image.size == (64, 64)
        parameters = read_png_metadata(raw)["parameters"]
        assert parameters == infotext
        parsed = parse_infotext(parameters)
        assert parsed["Prompt"] == "a red circle" and parsed["Negative prompt"] == "blurry"
        assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"], parsed["Seed"]) == ("2", "Euler a", "6",
                                                                                           str(seed))
        assert parsed["Size-1"] == "64" and parsed["Model"] == "tiny-sd1"
    assert body["parameters"]["prompt"] == "a red circle" and body["parameters"]["n_iter"] == 2
    assert len(list(ctx.folders.output_dir.glob("*.png"))) == 4  # save_images keeps them
    jobs = ctx.queue.history()
    assert len(jobs) == 2 and all(job.extra == {"source": "a1111"} for job in jobs)


def test_txt2img_without_save_images_keeps_no_outputs_and_can_skip_sending(client, ctx):
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": -1, "send_images": False})
    assert response.status_code == 200, response.text
    body = response.json()
    info = json.loads(body["info"])
    assert body["images"] == [] and 0 <= info["seed"] < 2**32 and len(info["infotexts"]) == 1
    assert list(ctx.folders.output_dir.glob("*.png")) == []


def test_img2img_with_init_image_and_legacy_sampler_name(client, ctx):
    response = client.post("/sdapi/v1/img2img", json={
        **SMALL, "sampler_name": "DPM++ 2M Karras", "init_images": [png_b64(gradient(96, 80), data_url=True)],
        "denoising_strength": 0.5, "resize_mode": 1, "batch_size": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 2
    parsed = [parse_infotext(read_png_metadata(decode(e)[1])["parameters"]) for e in body["images"]]
    assert [p["Seed"] for p in parsed] == ["42", "43"]
    assert all(p["Denoising strength"] == "0.5" and p["Sampler"] == "DPM++ 2M" and p["Schedule type"] == "Karras"
               for p in parsed)
    assert decode(body["images"][0])[0].size == (64, 64)
    assert body["parameters"]["init_images"] is None  # not echoed back
    assert json.loads(body["info"])["denoising_strength"] == 0.5
    assert list(ctx.folders.input_dir.rglob("*.png")) == []  # inputs of an unsaved request are removed


def test_img2img_with_mask_inpaints_only_masked(client):
    original = gradient(96, 64)
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (60, 20, 80, 40))
    response = client.post("/sdapi/v1/img2img", json={
        **SMALL, "init_images": [png_b64(original)], "mask": png_b64(mask), "mask_blur": 2,
        "inpainting_fill": 1, "inpaint_full_res_padding": 4, "denoising_strength": 0.9})
    assert response.status_code == 200, response.text
    body = response.json()
    image, raw = decode(body["images"][0])
    assert image.size == (96, 64)  # only masked: pasted back into the whole picture
    result = np.asarray(image.convert("RGB"))
    assert np.array_equal(result[:10, :40], np.asarray(original)[:10, :40])
    parsed = parse_infotext(read_png_metadata(raw)["parameters"])
    assert parsed["Inpaint area"] == "Only masked" and parsed["Masked area padding"] == "4"
    assert parsed["Mask blur"] == "2" and parsed["Denoising strength"] == "0.9"
    assert json.loads(body["info"])["extra_generation_params"]["Inpaint area"] == "Only masked"


BAD_REQUESTS = [
    ("txt2img", {"sampler_name": "Nope"}, "sampler_name"),
    ("txt2img", {"scheduler": "Sideways"}, "scheduler"),
    ("txt2img", {"width": 100000}, "width"),
    ("txt2img", {"width": "wide"}, "width"),
    ("txt2img", {"height": 32}, "height"),
    ("txt2img", {"batch_size": 1000}, "batch_size"),
    ("txt2img", {"width": 512, "height": 512, "batch_size": 2}, "batch_size"),  # over max_pixels
    ("txt2img", {"steps": "many"}, "steps"),
    ("txt2img", {"steps": 0}, "steps"),
    ("txt2img", {"prompt": 5}, "prompt"),
    ("txt2img", {"seed": "x"}, "seed"),
    ("txt2img", {"cfg_scale": -1}, "cfg_scale"),
    ("txt2img", {"override_settings": {"sd_model_checkpoint": "missing.safetensors"}}, "sd_model_checkpoint"),
    ("txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 40}}, "CLIP_stop_at_last_layers"),
    ("txt2img", {"override_settings": "yes"}, "override_settings"),
    ("txt2img", {"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
    ("txt2img", {"override_settings": {"sd_vae": "missing.safetensors"}}, "sd_vae"),
    ("txt2img", {"refiner_checkpoint": "missing.safetensors"}, "refiner_checkpoint"),
    ("txt2img", {"refiner_checkpoint": CKPT, "refiner_switch_at": 1.5}, "refiner_switch_at"),
    ("txt2img", {"subseed_strength": 1.5}, "subseed_strength"),
    ("txt2img", {"seed_resize_from_w": 9000, "seed_resize_from_h": 64}, "seed_resize_from_w"),
    ("img2img", {}, "init_images"),
    ("img2img", {"init_images": ["!!! not base64 !!!"]}, "init_images"),
    ("img2img", {"init_images": [base64.b64encode(b"hello, not an image").decode()]}, "init_images"),
    ("img2img", {"init_images": "abc"}, "init_images"),
    ("img2img", {"init_images": ["http://example.com/a.png"]}, "init_images"),
    ("img2img", {"init_images": ["data:image/png,abc"]}, "init_images"),
    ("img2img", {"mask": "@@@"}, "mask"),
    ("img2img", {"inpainting_fill": 9}, "inpainting_fill"),
    ("img2img", {"resize_mode": 8}, "resize_mode"),
    ("img2img", {"denoising_strength": 2}, "denoising_strength"),
    ("img2img", {"mask_blur_x": 2, "mask_blur_y": 5}, "mask_blur_x"),
]


def test_bad_requests_get_4xx_naming_the_field_and_the_next_request_works(client):
    init = png_b64(gradient())
    for route, changes, field in BAD_REQUESTS:
        body = {**SMALL, **({"init_images": [init]} if route == "img2img" else {}), **changes}
        if route == "img2img" and changes == {}:
            body.pop("init_images")
        response = client.post(f"/sdapi/v1/{route}", json=body)
        assert 400 <= response.status_code < 500, (route, changes, response.status_code, response.text)
        assert field in response.text, (route, changes, response.text)
    response = client.post("/sdapi/v1/txt2img", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    huge = base64.b64encode(b"\x00" * (3 * 2**20)).decode()
    response = client.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [huge]})
    assert response.status_code == 422 and "upload limit" in response.text
    response = client.post("/sdapi/v1/txt2img", json=SMALL)
    assert response.status_code == 200 and len(response.json()["images"]) == 1


def test_png_info_round_trip(client):
    generated = client.post("/sdapi/v1/txt2img", json=SMALL).json()["images"][0]
    response = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + generated})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["info"] == read_png_metadata(base64.b64decode(generated))["parameters"]
    assert body["parameters"]["Prompt"] == "a red circle" and body["parameters"]["Seed"] == "42"
    assert "prompt" in body["items"] and "parameters" not in body["items"]
    plain = client.post("/sdapi/v1/png-info", json={"image": png_b64(gradient())}).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}
    assert client.post("/sdapi/v1/png-info", json={"image": ""}).json()["info"] == ""
    bad = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(b"not an image").decode()})
    assert bad.status_code == 422 and "image" in bad.json()["detail"]


def test_options_persist_and_choose_the_default_checkpoint(client, ctx):
    checkpoints = ctx.folders.models_dir / "checkpoints"
    shutil.copy(checkpoints / CKPT, checkpoints / "other.safetensors")
    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"].startswith("other.safetensors [")  # no choice yet: the first one
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd1"}).status_code == 200
    assert json.loads((ctx.data_dir / "options.json").read_text())["sd_model_checkpoint"] == CKPT
    with client_for(ctx) as fresh:  # a new router reads the stored options
        title = fresh.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        assert title.startswith(f"{CKPT} [") and title.endswith("]")
        assert fresh.post("/sdapi/v1/options", json={"sd_model_checkpoint": title}).status_code == 200
    bad = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})
    assert bad.status_code == 422 and "sd_model_checkpoint" in bad.text
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other.safetensors"}).status_code == 200
    info = json.loads(client.post("/sdapi/v1/txt2img", json=SMALL).json()["info"])
    assert info["sd_model_name"] == "other"
    override = {**SMALL, "override_settings": {"sd_model_checkpoint": title}}
    assert json.loads(client.post("/sdapi/v1/txt2img", json=override).json()["info"])["sd_model_name"] == "tiny-sd1"


def test_vae_and_clip_skip_from_options_and_override_settings(client, ctx):
    save_checkpoint(ctx.folders.models_dir / "vae" / "other.safetensors", *tiny_sd1(seed=3))
    options = client.get("/sdapi/v1/options").json()
    assert (options["sd_vae"], options["CLIP_stop_at_last_layers"]) == ("Automatic", 1)
    assert client.post("/sdapi/v1/options", json={"sd_vae": "other", "CLIP_stop_at_last_layers": 2}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["sd_vae"] == "other.safetensors"
    info = json.loads(client.post("/sdapi/v1/txt2img", json=SMALL).json()["info"])
    parsed = parse_infotext(info["infotexts"][0])
    assert (parsed["VAE"], parsed["Clip skip"], info["clip_skip"]) == ("other.safetensors", "2", 2)
    assert info["sd_vae_name"] == "other.safetensors" and len(info["sd_vae_hash"]) == 10
    override = {**SMALL, "override_settings": {"sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1}}
    info = json.loads(client.post("/sdapi/v1/txt2img", json=override).json()["info"])
    assert "VAE" not in info["infotexts"][0] and "Clip skip" not in info["infotexts"][0]
    assert info["sd_vae_name"] is None
    assert client.post("/sdapi/v1/options", json={"sd_vae": "nope"}).status_code == 422


def test_listings(client, ctx):
    models = client.get("/sdapi/v1/sd-models").json()
    assert len(models) == 1
    model = models[0]
    assert model["model_name"] == "tiny-sd1" and len(model["sha256"]) == 64 and model["hash"] == model["sha256"][:10]
    assert model["title"] == f"{CKPT} [{model['hash']}]"
    assert model["filename"] == str(ctx.folders.models_dir / "checkpoints" / CKPT)
    samplers = {s["name"]: s for s in client.get("/sdapi/v1/samplers").json()}
    assert "k_euler_a" in samplers["Euler a"]["aliases"] and "DPM++ 2M" in samplers
    schedulers = {s["label"]: s["name"] for s in client.get("/sdapi/v1/schedulers").json()}
    assert schedulers["Karras"] == "karras" and schedulers["Automatic"] == "automatic"


def test_sd_models_titles_a_big_file_once_hashed_and_a_hash_finds_a_renamed_file(client, ctx, hasher, monkeypatch):
    import hashlib

    from inkwash.nodes.formats import file_hashes

    checkpoints = ctx.folders.models_dir / "checkpoints"
    renamed = checkpoints / "renamed.safetensors"
    (checkpoints / CKPT).rename(renamed)
    sha256 = hashlib.sha256(renamed.read_bytes()).hexdigest()
    monkeypatch.setattr(file_hashes, "HASH_ON_LISTING_BYTES", renamed.stat().st_size - 1)  # too big to hash now
    release = threading.Event()
    hasher.on_chunk = lambda *_: release.wait(30)
    model, = client.get("/sdapi/v1/sd-models").json()
    assert (model["title"], model["hash"], model["sha256"]) == ("renamed.safetensors", None, None)
    assert hasher.progress()["files_total"] == 1  # queued for the background thread
    release.set()
    assert hasher.wait_for(renamed) == sha256[:10]
    model, = client.get("/sdapi/v1/sd-models").json()
    assert (model["title"], model["hash"], model["sha256"]) == (f"renamed.safetensors [{sha256[:10]}]", sha256[:10],
                                                                sha256)
    assert model["model_name"] == "renamed" and model["filename"] == str(renamed)
    # the title an infotext or client has from before the rename, or a bare hash, names the renamed file
    for value in (f"{CKPT} [{sha256[:10]}]", sha256[:10], sha256):
        assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": value}).status_code == 200
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == model["title"]
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "0123456789"}).status_code == 422


def test_progress_and_interrupt_stop_the_whole_request(client, ctx):
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job"] == "" and idle["current_image"] is None
    result = {}
    worker = threading.Thread(target=lambda: result.update(response=client.post(
        "/sdapi/v1/txt2img", json={**SMALL, "steps": 1000, "n_iter": 3})))
    worker.start()
    deadline = time.time() + 120
    progress = idle
    while time.time() < deadline:
        progress = client.get("/sdapi/v1/progress").json()
        if progress["state"]["sampling_step"] >= 2 and progress["current_image"]:
            break
        time.sleep(0.05)
    assert 0 < progress["progress"] < 1 / 3 and progress["state"]["sampling_steps"] == 1000
    assert progress["state"]["job_count"] == 3 and progress["state"]["job"].startswith("task(")
    assert decode(progress["current_image"])[0].format == "PNG"
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    worker.join(120)
    response = result["response"]
    assert response.status_code == 200 and response.json()["images"] == []
    assert ctx.queue.remaining() == 0
    assert client.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200


def test_lora_tags_are_applied_and_reported_with_their_hashes(client, folders):
    from test_lora import _lora_folder, a1111_lora_hash

    _lora_folder(folders, "style.safetensors")
    plain = client.post("/sdapi/v1/txt2img", json=SMALL).json()
    tagged = client.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": SMALL["prompt"] + " <lora:style:1>"}).json()
    info = json.loads(tagged["info"])
    hashed = f"style: {a1111_lora_hash(folders.models_dir / 'loras' / 'style.safetensors')}"
    assert info["extra_generation_params"]["Lora hashes"] == hashed
    assert f'Lora hashes: "{hashed}"' in info["infotexts"][0]
    assert not np.array_equal(np.asarray(decode(plain["images"][0])[0]), np.asarray(decode(tagged["images"][0])[0]))


@pytest.mark.parametrize("changes, field, message", [
    ({"cfg_scale": float("nan")}, "cfg_scale", "expected a finite number"),
    ({"denoising_strength": float("inf"), "init_images": None}, "denoising_strength", "expected a finite number"),
    ({"steps": 0}, "steps", "must be between 1 and 1000, got 0"),
    ({"width": 8}, "width", "must be between 64 and 2048 pixels"),
])
def test_request_checks_answer_in_the_servers_error_format(client, changes, field, message):
    route = "img2img" if "init_images" in changes else "txt2img"
    body = json.dumps({**SMALL, **changes})  # NaN and Infinity as Python's json writes them
    response = client.post(f"/sdapi/v1/{route}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "BadRequest" and answer["field"] == field
    assert answer["detail"].startswith(f"{field}: ") and message in answer["detail"]


def test_a_missing_lora_and_unknown_scripts_are_warnings_and_the_request_generates(client, folders):
    from test_lora import _lora_folder

    _lora_folder(folders, "style.safetensors")
    body = {**SMALL, "prompt": SMALL["prompt"] + " <lora:nowhere:0.8>", "styles": ["Cinematic"],
            "alwayson_scripts": {"ADetailer": {"args": [{"ad_model": "face_yolov8n.pt"}]}, "empty": {}}}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["images"]) == 1
    warnings = json.loads(answer["info"])["warnings"]
    assert len(warnings) == 3, warnings
    assert "nowhere" in warnings[0] and "style" in warnings[0]  # names the LoRA, and what the folder has
    assert "'ADetailer'" in warnings[1] and "ignored" in warnings[1]
    assert "Cinematic" in warnings[2]
    assert json.loads(client.post("/sdapi/v1/txt2img", json=SMALL).json()["info"])["warnings"] == []


def test_the_endpoints_clients_probe_answer(client, folders, ctx):
    from test_lora import _lora_folder

    _lora_folder(folders, "sub/style.safetensors")
    loras = client.get("/sdapi/v1/loras").json()
    assert [(lora["name"], lora["alias"]) for lora in loras] == [("style", "style")]
    assert loras[0]["path"] == str(folders.models_dir / "loras" / "sub" / "style.safetensors")
    assert isinstance(loras[0]["metadata"], dict)
    for route, expected in (("prompt-styles", []), ("face-restorers", []), ("realesrgan-models", []),
                            ("hypernetworks", []),
                            ("scripts", {"txt2img": ["x/y/z plot"], "img2img": ["x/y/z plot"]})):
        response = client.get(f"/sdapi/v1/{route}")
        assert response.status_code == 200 and response.json() == expected, route
    for route in ("refresh-checkpoints", "refresh-loras", "refresh-vae"):
        response = client.post(f"/sdapi/v1/{route}")
        assert response.status_code == 200 and response.json() is None, route
    flags = client.get("/sdapi/v1/cmd-flags").json()
    assert flags["ckpt_dir"] == str(folders.models_dir / "checkpoints") and flags["api"] is True
    assert flags["data_dir"] == str(ctx.data_dir)
    assert not [key for key in flags if any(word in key for word in ("auth", "password", "tls", "key", "cert"))]
    memory = client.get("/sdapi/v1/memory").json()
    assert 0 < memory["ram"]["used"] <= memory["ram"]["total"] and "cuda" in memory
