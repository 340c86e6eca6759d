"""Intermediate sizes: every node's output size is checked against the server's limit before it runs
(resize chains included), and POST /free drops cached intermediates."""
import numpy as np
import pytest
from PIL import Image

from inkwash.nodes.executor import Executor
from inkwash.nodes.runtime import images as imaging


@pytest.fixture
def small_input(folders):
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folders.input_dir / "small.png")
    return "small.png"


def scale_chain(factors, image="small.png") -> dict:
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": image}}}
    for index, factor in enumerate(factors, start=2):
        workflow[str(index)] = {"class_type": "ImageScaleBy", "inputs": {
            "image": [str(index - 1), 0], "upscale_method": "nearest-exact", "scale_by": factor}}
    workflow["99"] = {"class_type": "PreviewImage", "inputs": {"images": [str(len(factors) + 1), 0]}}
    return workflow


def test_a_resize_chain_is_refused_before_the_oversized_node_runs(registry, small_input, monkeypatch):
    scaled = []
    original = imaging.scale_image
    monkeypatch.setattr(imaging, "scale_image",
                        lambda image, w, h, *a, **k: scaled.append((w, h)) or original(image, w, h, *a, **k))
    executor = Executor(registry)
    executor.max_pixels = 1024 * 1024
    result = executor.execute(scale_chain([8, 8, 8]))  # 512 px, then 4096 px: 16 M pixels
    assert result.status == "error"
    assert result.error["node_id"] == "3" and result.error["node_type"] == "ImageScaleBy"
    assert "16777216 pixels" in result.error["exception_message"]
    assert "more than this server allows (1048576)" in result.error["exception_message"]
    assert scaled == [(512, 512)]  # the 4096 x 4096 resize never started


@pytest.mark.parametrize("node, inputs, pixels", [
    ("LatentUpscaleBy", {"upscale_method": "nearest-exact", "scale_by": 4.0}, 2 * 512 * 512),
    ("LatentUpscale", {"upscale_method": "nearest-exact", "width": 0, "height": 1024, "crop": "disabled"},
     2 * 1024 * 1024),
    ("VAEDecode", {}, 2 * 128 * 128),
])
def test_latent_nodes_declare_their_output_size(registry, node, inputs, pixels):
    import torch

    samples = {"samples": torch.zeros(2, 4, 16, 16)}
    assert registry[node].output_pixels(samples=samples, **inputs) == pixels


def test_the_server_limits_every_nodes_output(folders, tmp_path):
    from inkwash.webui.serve_options import ServeOptions
    from inkwash.webui.server import create_context

    ctx = create_context(ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir,
                                      input_dir=folders.input_dir, data_dir=tmp_path / "data"))
    assert ctx.queue.executor.max_pixels == ctx.max_pixels


def test_free_drops_cached_intermediates(folders, small_input, tmp_path):
    from fastapi.testclient import TestClient

    from inkwash.webui.serve_options import ServeOptions
    from inkwash.webui.server import create_app, create_context
    from test_server import wait_history

    options = ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir, input_dir=folders.input_dir,
                           data_dir=tmp_path / "data")
    ctx = create_context(options)
    with TestClient(create_app(ctx, options, with_ui=False), base_url="http://127.0.0.1:7860") as client:
        assert client.post("/prompt", json={"prompt": scale_chain([2, 0.5] * 5)}).status_code == 200
        wait_history(client, 1)
        assert ctx.queue.executor.cache_size == 12
        assert client.post("/free", json={"free_memory": True}).status_code == 200
        assert ctx.queue.executor.cache_size == 0
