"""Gradio's routes and the rest: no CORS grant to another origin (another port of the
same host is another origin), so a page elsewhere cannot read the user's images and prompts."""
import pytest
from fastapi.testclient import TestClient

from inkwash.webui.serve_options import ServeOptions
from inkwash.webui.server import create_app, create_context


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("cors")
    for name in ("models", "output", "input"):
        (root / name).mkdir()
    # reached by LAN address: the server listens on all interfaces (with credentials turned off here)
    options = ServeOptions(host="0.0.0.0", models_dir=root / "models", output_dir=root / "output",
                           input_dir=root / "input", data_dir=root / "data", insecure_no_auth=True)
    (root / "output" / "secret.png").write_bytes(b"\x89PNG not really")
    with TestClient(create_app(create_context(options), options), base_url="http://192.168.1.20:7860") as test_client:
        yield test_client


FOREIGN = ["http://192.168.1.20:8188", "http://evil.example", "null"]


@pytest.mark.parametrize("origin", FOREIGN)
@pytest.mark.parametrize("path", ["/gradio_api/info", "/config", "/queue", "/object_info/KSampler", "/sdapi/v1/samplers"])
def test_no_cors_grant_to_a_foreign_origin(client, origin, path):
    answer = client.get(path, headers={"Origin": origin})
    assert not [h for h in answer.headers if h.lower().startswith("access-control-")], (path, dict(answer.headers))


@pytest.mark.parametrize("origin", FOREIGN)
def test_no_preflight_grant_to_a_foreign_origin(client, origin):
    answer = client.options("/gradio_api/info", headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                                          "Access-Control-Request-Headers": "content-type"})
    assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-credentials" not in answer.headers


def test_same_origin_pages_still_work(client):
    answer = client.get("/config", headers={"Origin": "http://192.168.1.20:7860"})
    assert answer.status_code == 200 and "components" in answer.json()


@pytest.mark.parametrize("body", [{"bogus": 1}, {"data": [1], "extra": 2}])
@pytest.mark.parametrize("endpoint", ["txt2img", "refresh", "no_such_endpoint"])
def test_gradio_calls_with_unknown_parameters_are_a_4xx(client, endpoint, body):
    # (this module's app is Gradio's too: the malformed-input check lives here to build it once)
    answer = client.post(f"/gradio_api/call/v2/{endpoint}", json=body, headers={"Origin": "http://192.168.1.20:7860"})
    assert 400 <= answer.status_code < 500, answer.text
    assert client.get("/config").status_code == 200
