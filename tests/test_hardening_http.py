"""Malformed requests at every door of the assembled app: non-finite numbers, deep JSON and long names
get a 4xx naming what is wrong, stored jobs never break a listing, and the server keeps serving."""
import json
import sqlite3
from io import BytesIO

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import BaseModel, Field

from inkwash.nodes.runtime.checkpoint_save import save_checkpoint
from inkwash.webui.serve_options import ServeOptions
from inkwash.webui.server import create_app, create_context, install_error_handlers
from test_server import CKPT, txt2img, wait_history
from tiny_models import tiny_sd1


@pytest.fixture
def options(folders, tmp_path):
    path = folders.models_dir / "checkpoints" / CKPT
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, *tiny_sd1())
    return ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir, input_dir=folders.input_dir,
                        data_dir=tmp_path / "data")


@pytest.fixture
def client(options):
    with TestClient(create_app(create_context(options), options, with_ui=False),
                    base_url="http://127.0.0.1:7860") as test_client:
        yield test_client


def post_raw(client, path: str, text: str):
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


def alive(client) -> bool:
    return client.get("/queue").status_code == 200 and client.get("/sdapi/v1/samplers").status_code == 200


@pytest.mark.parametrize("field, value", [("cfg", "NaN"), ("denoise", "Infinity"), ("steps", "-Infinity"),
                                          ("cfg", "1e999")])
def test_non_finite_numbers_at_comfy_prompt_are_refused_naming_the_field(client, field, value):
    body = json.dumps({"prompt": txt2img()}).replace(f'"{field}": ', f'"{field}": {value}, "was": ', 1)
    answer = post_raw(client, "/prompt", body)
    assert answer.status_code == 400, answer.text
    assert f"prompt.3.inputs.{field}" in answer.json()["detail"]
    assert client.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert alive(client)


@pytest.mark.parametrize("path, field", [("/sdapi/v1/txt2img", "cfg_scale"), ("/sdapi/v1/txt2img", "denoising_strength"),
                                         ("/sdapi/v1/img2img", "denoising_strength"),
                                         ("/api/settings", "Comfy.Scale"), ("/sdapi/v1/options", "CLIP_stop_at_last_layers")])
def test_non_finite_numbers_are_refused_at_every_door(client, path, field):
    answer = post_raw(client, path, f'{{"prompt": "a red circle", "{field}": NaN}}')
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["detail"] and "NaN" in answer.json()["detail"]
    assert alive(client)


def test_graph_validation_refuses_a_non_finite_float(options):
    ctx = create_context(options)
    workflow = txt2img()
    workflow["3"]["inputs"]["cfg"] = float("nan")
    validation = ctx.queue.executor.validate(workflow) if hasattr(ctx.queue, "executor") else None
    if validation is None:
        from inkwash.nodes import graph
        validation = graph.validate(workflow, ctx.registry)
    assert not validation.ok
    errors = validation.response()["node_errors"]["3"]["errors"]
    assert any(e["extra_info"]["input_name"] == "cfg" and "finite" in e["details"] for e in errors)


def test_a_stored_job_with_nan_never_breaks_a_listing(options):
    ctx = create_context(options)
    with TestClient(create_app(ctx, options, with_ui=False), base_url="http://127.0.0.1:7860") as client:
        job_id = client.post("/prompt", json={"prompt": txt2img()}).json()["prompt_id"]
        wait_history(client, 1)
    # a row written before non-finite numbers were refused (or by hand): NaN in its workflow and outputs
    with sqlite3.connect(options.data_dir / "jobs.sqlite3") as db:
        workflow = json.dumps(txt2img()).replace('"cfg": 5.0', '"cfg": NaN')
        db.execute("UPDATE jobs SET workflow = ?, outputs = ? WHERE id = ?", (workflow, '{"9": {"x": Infinity}}', job_id))
    with TestClient(create_app(create_context(options), options, with_ui=False),
                    base_url="http://127.0.0.1:7860") as client:
        for path in ("/history", f"/history/{job_id}", "/queue", "/api/jobs", f"/api/jobs/{job_id}", "/api/history"):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text)
        entry = client.get(f"/history/{job_id}").json()[job_id]
        assert entry["prompt"][2]["3"]["inputs"]["cfg"] is None
        assert "corrupt" in json.dumps(entry["status"]) or "corrupt" in json.dumps(client.get(f"/api/jobs/{job_id}").json())


def test_fastapis_422_answer_survives_a_nan_input():
    class Body(BaseModel):
        scale: float = Field(ge=0, le=10)

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/scale")
    def scale(body: Body):
        return {"scale": body.scale}

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = post_raw(client, "/scale", '{"scale": -Infinity}')
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", "scale"]


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("path", ["/prompt", "/api/prompt", "/api/settings", "/queue", "/api/queue", "/interrupt",
                                  "/free", "/history", "/sdapi/v1/txt2img", "/sdapi/v1/options", "/api/jobs/cancel",
                                  "/api/userdata/x.json"])
def test_deeply_nested_json_is_a_4xx(client, path):
    answer = post_raw(client, path, '{"a": ' + DEEP + "}")
    assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text)
    assert alive(client)


def test_upload_names_over_255_bytes_are_a_4xx(client):
    buffer = BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    for name in ("a" * 300 + ".png", "é" * 200 + ".png"):
        answer = client.post("/upload/image", files={"image": (name, buffer.getvalue(), "image/png")})
        assert 400 <= answer.status_code < 500, answer.text
        assert "long" in answer.text
    answer = client.post("/api/userdata/" + "b" * 300 + ".json", content=b"{}")
    assert 400 <= answer.status_code < 500, answer.text
    assert 400 <= client.get("/view", params={"filename": "c" * 300 + ".png"}).status_code < 500
    assert alive(client)
