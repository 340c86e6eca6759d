"""A job that runs out of device memory fails with an error naming the node, the sizes and what to try;
the memory is released and the next job runs (executor and ComfyUI API)."""
import copy

import pytest
import torch

from inkwash.nodes import out_of_memory
from inkwash.nodes.executor import Executor
from inkwash.nodes.runtime import devices, sampling, vae_codec
from test_comfy_api import TXT2IMG, server  # noqa: F401  (the ComfyUI API fixture)


def txt2img(batch_size=2):
    workflow = copy.deepcopy(TXT2IMG)
    workflow["5"]["inputs"].update(batch_size=batch_size, width=64, height=64)
    return workflow


@pytest.fixture
def released(monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "free_cached_memory", lambda: calls.append(True))
    return calls


def fail_once(monkeypatch, module, name, error):
    real = getattr(module, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(True)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, failing)


def test_out_of_memory_while_sampling_names_the_node_sizes_and_what_to_try(registry, checkpoint, monkeypatch,
                                                                          released, one_thread):
    fail_once(monkeypatch, sampling, "sample", torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 3.00 GiB. GPU 0 has a total capacity of 7.79 GiB"))
    executor = Executor(registry)
    failed = executor.execute(txt2img())
    assert failed.status == "error" and failed.error["node_id"] == "3"
    message = failed.error["exception_message"]
    assert message.startswith("KSampler (node 3) ran out of device memory for batch 2, 64x64. Try ")
    assert "a smaller batch" in message and "`--vram low`" in message and "tiled VAE" in message
    assert "Tried to allocate 3.00 GiB" in message  # torch's own words are kept
    assert failed.error["exception_type"] == "OutOfDeviceMemory"
    assert released == [True]
    again = executor.execute(txt2img())
    assert again.status == "success", again.error
    assert released == [True]  # a job that succeeds frees nothing


def test_out_of_memory_in_a_vae_decode_suggests_the_tiled_node_over_the_comfyui_api(server, checkpoint,  # noqa: F811
                                                                                  monkeypatch, released):
    client, queue, _ = server
    fail_once(monkeypatch, vae_codec, "decode", torch.cuda.OutOfMemoryError("CUDA out of memory."))
    queue.start()
    first = client.post("/prompt", json={"prompt": txt2img(batch_size=1)}).json()["prompt_id"]
    assert queue.wait(first, timeout=300).status == "error"
    history = client.get(f"/history/{first}").json()[first]
    kind, error = history["status"]["messages"][-1]
    assert kind == "execution_error" and error["node_id"] == "8" and error["node_type"] == "VAEDecode"
    assert error["exception_message"].startswith(
        "VAEDecode (node 8) ran out of device memory for batch 1, 64x64. Try VAE Decode (Tiled)")
    assert released == [True]
    second = client.post("/prompt", json={"prompt": txt2img(batch_size=1)}).json()["prompt_id"]
    assert queue.wait(second, timeout=300).status == "success"
    assert client.get(f"/history/{second}").json()[second]["outputs"]["9"]["images"]


def test_errors_that_are_not_out_of_memory_are_left_as_they_are(registry, checkpoint, monkeypatch, released):
    fail_once(monkeypatch, sampling, "sample", RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    failed = Executor(registry).execute(txt2img())
    assert failed.error["exception_message"] == "mat1 and mat2 shapes cannot be multiplied"
    assert failed.error["exception_type"] == "RuntimeError" and released == []


def test_out_of_memory_is_recognised_by_type_and_by_the_words_mps_uses():
    assert out_of_memory.is_out_of_memory(torch.OutOfMemoryError("x"))
    assert out_of_memory.is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert out_of_memory.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"))
    assert not out_of_memory.is_out_of_memory(ValueError("out of memory"))
    assert not out_of_memory.is_out_of_memory(RuntimeError("shape mismatch"))


def test_sizes_come_from_latents_images_or_size_widgets():
    assert out_of_memory.job_sizes({"samples": {"samples": torch.zeros(4, 4, 96, 128)}}) == "batch 4, 1024x768"
    assert out_of_memory.job_sizes({"image": torch.zeros(2, 512, 640, 3)}) == "batch 2, 640x512"
    assert out_of_memory.job_sizes({"width": 1024, "height": 1024, "batch_size": 3}) == "batch 3, 1024x1024"
    assert out_of_memory.job_sizes({"text": "a cat"}) == ""
