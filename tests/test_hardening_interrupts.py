"""Interrupts inside one long node: VAE decode and encode (whole, batched and tiled), upscaling with a model,
and resizing big batches check between images, tiles and blocks, so /interrupt stops them part way."""
import threading
import time

import pytest
import torch

from inkwash.nodes.core import image as image_nodes
from inkwash.nodes.core import latent as latent_nodes
from inkwash.nodes.core import vae as vae_nodes
from inkwash.nodes.declare import Interrupted, NodeContext
from inkwash.nodes.runtime import upscale_models
from inkwash.nodes.runtime.model_types import Vae
from test_comfy_api import CKPT, server  # noqa: F401  (fixture)
from tiny_models import tiny_vae, write_tiny_esrgan

@pytest.fixture(scope="module")
def vae(one_thread):
    from inkwash.nodes.runtime.model_types import SD1, Family

    return Vae(tiny_vae(), Family(SD1))


class InterruptAfter:
    """Counts the passes through a module; after `passes` of them the user has interrupted."""

    def __init__(self, module: torch.nn.Module, passes: int = 1):
        self.calls, self.passes = 0, passes
        self.interrupted = threading.Event()
        self._hook = module.register_forward_hook(self._count)

    def _count(self, *_):
        self.calls += 1
        if self.calls >= self.passes:
            self.interrupted.set()

    def context(self) -> NodeContext:
        return NodeContext("8", is_interrupted=self.interrupted.is_set)

    def remove(self):
        self._hook.remove()


def passes_through(module: torch.nn.Module, work) -> int:
    counter = InterruptAfter(module, passes=10 ** 9)
    try:
        work()
    finally:
        counter.remove()
    return counter.calls


@pytest.mark.parametrize("part, node, given", [
    ("decoder", vae_nodes.VAEDecodeTiled, lambda: {"samples": torch.randn(1, 4, 24, 24)}),  # 192 px: 16 tiles
    ("encoder", vae_nodes.VAEEncodeTiled, lambda: torch.rand(1, 192, 192, 3)),
])
def test_tiled_vae_stops_between_tiles(vae, part, node, given):
    module, value = getattr(vae.vae, part), given()
    overlap = 16 if part == "decoder" else 0
    tiles = passes_through(module, lambda: node().run(value, vae, 64, overlap))
    assert tiles > 4
    counter = InterruptAfter(module)
    try:
        with pytest.raises(Interrupted):
            node(counter.context()).run(value, vae, 64, overlap)
    finally:
        counter.remove()
    assert counter.calls == 1


def test_batched_vae_decode_stops_between_images_and_blocks(vae):
    samples = {"samples": torch.randn(3, 4, 8, 8)}
    counter = InterruptAfter(vae.vae.decoder)
    try:
        with pytest.raises(Interrupted):
            vae_nodes.VAEDecode(counter.context()).run(samples, vae)
    finally:
        counter.remove()
    assert counter.calls == 1  # the second image never started
    # within one image: interrupted after the first resolution block, the decoder does not finish
    counter = InterruptAfter(vae.vae.decoder.up_blocks[0])
    finished = InterruptAfter(vae.vae.decoder, passes=10 ** 9)
    try:
        with pytest.raises(Interrupted):
            vae_nodes.VAEDecode(counter.context()).run({"samples": samples["samples"][:1]}, vae)
    finally:
        counter.remove()
        finished.remove()
    assert counter.calls == 1 and finished.calls == 0


def test_vae_hooks_are_gone_afterwards(vae):
    samples = {"samples": torch.randn(1, 4, 8, 8)}
    expected = vae_nodes.VAEDecode().run(samples, vae)[0]
    counter = InterruptAfter(vae.vae.decoder)
    with pytest.raises(Interrupted):
        vae_nodes.VAEDecode(counter.context()).run({"samples": samples["samples"].repeat(2, 1, 1, 1)}, vae)
    counter.remove()
    # a later decode, interrupted or not, is not stopped by the old job's check
    assert torch.equal(vae_nodes.VAEDecode(NodeContext(is_interrupted=lambda: False)).run(samples, vae)[0], expected)
    assert not any(module._forward_pre_hooks for module in vae.vae.modules())


def test_upscale_with_model_stops_between_tiles(tmp_path, one_thread):
    model = upscale_models.load(write_tiny_esrgan(tmp_path))
    image = torch.rand(1, 48, 48, 3)
    tiles = passes_through(model.model, lambda: upscale_models.upscale(model, image, tile=16, overlap=4))
    assert tiles > 4
    counter = InterruptAfter(model.model)
    try:
        with pytest.raises(Interrupted):
            upscale_models.upscale(model, image, tile=16, overlap=4, check_interrupt=counter.context().check_interrupt)
    finally:
        counter.remove()
    assert counter.calls == 1


@pytest.mark.parametrize("node, inputs", [
    (image_nodes.ImageScaleBy, {"upscale_method": "bicubic", "scale_by": 2.0}),
    (image_nodes.ImageScaleBy, {"upscale_method": "lanczos", "scale_by": 2.0}),
    (image_nodes.ImageScale, {"upscale_method": "area", "width": 20, "height": 12, "crop": "center"}),
    (latent_nodes.LatentUpscaleBy, {"upscale_method": "bislerp", "scale_by": 1.5}),
    (latent_nodes.LatentUpscale, {"upscale_method": "nearest-exact", "width": 96, "height": 64, "crop": "disabled"}),
])
def test_resizing_a_batch_stops_between_items_and_gives_the_same_values(node, inputs):
    batch = torch.rand(4, 8, 8, 3) if node in (image_nodes.ImageScaleBy, image_nodes.ImageScale) else \
        {"samples": torch.randn(4, 4, 8, 8)}
    whole = node().run(batch, **inputs)[0]
    checks = []
    item_by_item = node(NodeContext(is_interrupted=lambda: checks.append(1) or False)).run(batch, **inputs)[0]
    assert len(checks) == 4
    if isinstance(whole, dict):
        whole, item_by_item = whole["samples"], item_by_item["samples"]
    assert torch.equal(item_by_item, whole)
    checks.clear()
    with pytest.raises(Interrupted):
        node(NodeContext(is_interrupted=lambda: checks.append(1) or len(checks) > 1)).run(batch, **inputs)
    assert len(checks) == 2  # stopped before the second item


def test_comfy_api_reports_an_interrupt_during_a_tiled_decode(server, checkpoint, monkeypatch):  # noqa: F811
    from diffusers.models.autoencoders.vae import Decoder

    client, queue, _ = server
    started, release, tiles = threading.Event(), threading.Event(), []
    forward = Decoder.forward

    def slow_first_tile(self, *args, **kwargs):
        tiles.append(1)
        started.set()
        release.wait(60)  # the user interrupts while the first tile decodes
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Decoder, "forward", slow_first_tile)
    workflow = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 192, "width": 192}},
        "8": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["5", 0], "vae": ["4", 2], "tile_size": 64,
                                                         "overlap": 0, "temporal_size": 64, "temporal_overlap": 8}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    queue.start()
    response = client.post("/prompt", json={"prompt": workflow})
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    assert started.wait(120)
    assert client.post("/interrupt", json={"prompt_id": prompt_id}).status_code == 200
    time.sleep(0.2)
    release.set()
    assert queue.wait(prompt_id, timeout=120).status == "interrupted"
    assert len(tiles) == 1  # of 9
    entry = client.get(f"/history/{prompt_id}").json()[prompt_id]
    messages = dict(entry["status"]["messages"])
    assert messages["execution_interrupted"]["node_id"] == "8"
    assert entry["outputs"] == {}
