"""Hypothesis fuzzing of the two busiest doors, /prompt and /sdapi/v1/txt2img, on the assembled app: a fixed
number of generated bodies (any JSON, NaN and huge numbers included, and valid requests with one value
replaced), none answered with a 5xx, and the server still serving afterwards."""
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from inkwash.webui.serve_options import ServeOptions
from inkwash.webui.server import create_app, create_context

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = json.loads((REPO / "workflows" / "txt2img.json").read_text())
A1111_FIELDS = ["prompt", "negative_prompt", "steps", "cfg_scale", "width", "height", "seed", "sampler_name",
                "scheduler", "batch_size", "n_iter", "denoising_strength", "enable_hr", "hr_scale",
                "override_settings", "styles", "subseed", "restore_faces", "send_images", "alwayson_scripts"]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["", "NaN", "1e999", "-1", "euler", "4", "Euler a", "[4, 0]", "x" * 300]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=20)


@st.composite
def workflows(draw):
    """txt2img.json with one input, node or the whole node table replaced by something generated."""
    workflow = json.loads(json.dumps(WORKFLOW))
    node_id = draw(st.sampled_from(sorted(workflow)))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        name = draw(st.sampled_from(sorted(workflow[node_id]["inputs"])))
        workflow[node_id]["inputs"][name] = draw(values)
    elif choice == 1:
        workflow[node_id] = draw(values)
    elif choice == 2:
        workflow[node_id]["class_type"] = draw(values)
    else:
        workflow[draw(st.text(max_size=8))] = draw(values)
    return workflow


prompt_bodies = st.one_of(values, st.fixed_dictionaries({"prompt": workflows()}),
                          st.fixed_dictionaries({"prompt": workflows(), "client_id": values, "extra_data": values,
                                                 "front": values, "number": values}))
txt2img_bodies = st.one_of(values, st.dictionaries(st.sampled_from(A1111_FIELDS), values, max_size=8))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    for name in ("models", "output", "input"):
        (root / name).mkdir()
    # no checkpoint: a body that passes every check is refused for want of one, so nothing generates
    options = ServeOptions(models_dir=root / "models", output_dir=root / "output", input_dir=root / "input",
                           data_dir=root / "data")
    with TestClient(create_app(create_context(options), options, with_ui=False), base_url="http://127.0.0.1:7860",
                    raise_server_exceptions=False) as test_client:
        yield test_client
        assert test_client.get("/queue").status_code == 200
        assert test_client.get("/sdapi/v1/samplers").status_code == 200


def post(client, path: str, body) -> int:
    answer = client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert answer.status_code < 500, (path, body, answer.status_code, answer.text[:500])
    return answer.status_code


@FUZZ
@given(body=prompt_bodies)
def test_fuzzed_prompt_bodies_are_never_a_5xx(client, body):
    post(client, "/prompt", body)


@FUZZ
@given(body=txt2img_bodies)
def test_fuzzed_txt2img_bodies_are_never_a_5xx(client, body):
    post(client, "/sdapi/v1/txt2img", body)
