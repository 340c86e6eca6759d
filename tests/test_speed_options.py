"""--compile (the UNet through torch.compile, compiled once per shape and reused), --precision on the
command line, channels_last on CUDA, and SDPA as the attention kernel off CUDA."""
import pytest
import torch

from inkwash.nodes.runtime import devices, sampling, text_encode, unet_compile
from inkwash.webui.cli import build_parser
from inkwash.webui.serve_options import apply_device_options, device_arguments
from tiny_models import tiny_sd1, tiny_vae


@pytest.fixture
def settings_restored():
    yield
    devices.set_precision("auto")
    unet_compile.set_compile(False)


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them as they are (inductor
    takes minutes on a shared CPU; the graph capture and the per-shape cache are what is tested)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def test_compile_runs_the_unet_compiled_once_per_shape_and_gives_the_same_latent(settings_restored, one_thread):
    model, clip, _ = tiny_sd1()
    positive, negative = text_encode.encode(clip, "a red barn"), text_encode.encode(clip, "blurry")

    def sample(batch=1):
        latent = {"samples": torch.zeros(batch, 4, 8, 8)}
        return sampling.sample(model, positive, negative, latent, 7, 3, 6.0, "euler", "normal")["samples"]

    plain = sample()
    backend = CountingBackend()
    unet_compile.set_compile(True, backend=backend)
    torch._dynamo.reset()
    compiled = sample()
    after_first = backend.graphs
    assert after_first >= 1  # the UNet went through torch.compile
    assert torch.allclose(compiled, plain, atol=1e-4), (compiled - plain).abs().max()
    assert torch.equal(sample(), compiled)
    assert backend.graphs == after_first  # the same shape again: no recompiling
    assert unet_compile.for_sampling(model.unet) is unet_compile.for_sampling(model.unet)
    sample(batch=2)  # a new shape compiles its own graph
    assert backend.graphs > after_first
    unet_compile.set_compile(False)
    assert unet_compile.for_sampling(model.unet) is model.unet


def test_the_command_line_sets_precision_and_compile(settings_restored):
    for command in (["run", "workflow.json"], ["serve"]):
        args = build_parser().parse_args([*command, "--precision", "fp32", "--compile"])
        apply_device_options(**device_arguments(args))
        assert devices.precision() == "fp32" and unet_compile.enabled()
        assert devices.default_dtype("cuda") == torch.float32
        defaults = build_parser().parse_args(command)
        apply_device_options(**device_arguments(defaults))
        assert devices.precision() == "auto" and not unet_compile.enabled()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--precision", "fp8"])


def test_channels_last_only_for_cuda(monkeypatch):
    vae = tiny_vae()
    devices.set_memory_format(vae)
    assert vae.decoder.conv_in.weight.is_contiguous()
    monkeypatch.setattr(devices, "default_device", lambda: torch.device("cuda"))
    devices.set_memory_format(vae)
    assert vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_sdpa_is_the_attention_kernel_off_cuda():
    model, _, vae = tiny_sd1()
    assert devices.set_attention(model.unet) == "sdpa"
    assert devices.set_attention(vae.vae) == "sdpa"


def test_the_compiled_wrapper_adds_no_weights_and_does_not_keep_an_evicted_unet_alive(settings_restored):
    import gc
    import weakref

    from tiny_models import tiny_unet

    unet_compile.set_compile(True, backend="eager")
    unet = tiny_unet()
    keys = list(unet.state_dict())
    compiled = unet_compile.for_sampling(unet)
    assert compiled is not unet and list(unet.state_dict()) == keys
    alive = weakref.ref(unet)
    del unet, compiled
    gc.collect()
    assert alive() is None
