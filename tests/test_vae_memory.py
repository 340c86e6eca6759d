"""The VAE under memory pressure and in half precision: tiled decodes that match a whole one, automatic
tiling when the estimate says a whole decode will not fit, one tiled retry after an out-of-memory error,
and the fall back from a half-precision VAE that overflows."""
import logging
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from inkwash.nodes.runtime import devices, vae_codec
from inkwash.nodes.runtime.checkpoint_load import load_checkpoint
from inkwash.nodes.runtime.model_configs import CONFIG_ROOT, read_config
from inkwash.nodes.runtime.model_types import SD1, Family, Vae
from tiny_models import tiny_vae

DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "models/checkpoints/inkwash-demo.safetensors"


@pytest.fixture(autouse=True)
def no_remembered_upcast(monkeypatch):
    monkeypatch.setattr(devices, "_vae_upcast", None)


def sd_shaped_vae() -> Vae:
    """SD 1.5's VAE config (4 blocks of 2 ResNets, mid-block attention, 32 norm groups) at a quarter of
    its channel widths: the real widths take minutes per 1024x1024 decode on a CPU."""
    config = read_config(CONFIG_ROOT / "sd15", "vae")
    config["block_out_channels"] = [32, 64, 128, 128]
    torch.manual_seed(0)
    return Vae(AutoencoderKL.from_config(config).eval(), Family(SD1))


def decoder_inputs(vae: Vae) -> list:
    """Records the latent sizes the decoder is run on."""
    seen = []
    vae.vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    return seen


def seam_and_interior_error(error: torch.Tensor, seams: list[int], band: int = 16) -> tuple[float, float]:
    """Mean error in `band`-pixel columns around the seams vs. the columns away from them."""
    columns = error.mean(dim=(0, 1, 3))  # per x
    near = torch.zeros_like(columns, dtype=torch.bool)
    for x in seams:
        near[max(0, x - band):x + band] = True
    return columns[near].mean().item(), columns[~near].mean().item()


@pytest.mark.parametrize("which", ["sd_shaped", "demo"])
def test_auto_tiled_decode_of_a_1024px_image_matches_the_whole_decode(which, monkeypatch, one_thread):
    vae = sd_shaped_vae() if which == "sd_shaped" else load_checkpoint(DEMO_CHECKPOINT, "cpu", torch.float32)[2]
    torch.manual_seed(1)
    latent = torch.randn(1, 4, 128, 128)  # a 1024x1024 image
    whole = vae_codec.decode(vae, latent)
    seen = decoder_inputs(vae)
    # free memory for a 512 px tile but not for the whole image
    monkeypatch.setattr(devices, "free_memory", lambda device: vae_codec.activation_bytes(vae, (64, 64)) + 1)
    tiled = vae_codec.decode(vae, latent)
    assert seen and max(seen) == (64, 64), seen  # it went in 512 px tiles
    assert tiled.shape == whole.shape == (1, 1024, 1024, 3)
    error = (tiled - whole).abs()
    tiles = vae_codec._tile_starts(128, 64, vae_codec.AUTO_OVERLAP // 8)
    seams = [(start + vae_codec.AUTO_OVERLAP // 16) * 8 for start in tiles[1:]]  # the middle of each overlap
    near, away = seam_and_interior_error(error, seams)
    print(f"{which}: max {error.max():.4f} mean {error.mean():.5f} p99.9 {error.flatten().quantile(0.999):.4f} "
          f"seams {near:.5f} elsewhere {away:.5f}")
    # Tiles are blended, so seams are no worse than the rest; what remains everywhere is each tile's own
    # GroupNorm statistics and attention context (random weights; a trained VAE varies less).
    assert error.mean() < 0.012 and near < 1.5 * away
    assert error.flatten().quantile(0.999) < 0.15


def test_a_whole_decode_is_kept_while_it_fits(monkeypatch, one_thread):
    vae = Vae(tiny_vae(), Family(SD1))
    seen = decoder_inputs(vae)
    monkeypatch.setattr(devices, "free_memory", lambda device: vae_codec.activation_bytes(vae, (32, 32)))
    vae_codec.decode(vae, torch.randn(1, 4, 32, 32))
    assert seen == [(32, 32)]


def test_the_estimate_grows_with_the_image_and_the_dtype():
    vae = sd_shaped_vae()
    small, large = vae_codec.activation_bytes(vae, (64, 64)), vae_codec.activation_bytes(vae, (128, 128))
    assert large >= 4 * small
    # SD's decoder at 1024x1024: the last blocks hold 2x64 channels at full size, in fp32
    assert large > 1024 * 1024 * 64 * 4 * vae_codec.ALIVE_ACTIVATIONS
    vae.vae.to(torch.float16)
    assert vae_codec.activation_bytes(vae, (128, 128)) < large
    assert vae_codec.activation_bytes(vae, (64, 64), "encode") > 0


def test_out_of_memory_in_a_whole_decode_is_retried_once_in_tiles(monkeypatch, caplog, one_thread):
    vae = Vae(tiny_vae(), Family(SD1))
    torch.manual_seed(2)
    latent = torch.randn(1, 4, 32, 32)
    whole = vae_codec.decode(vae, latent)
    seen = decoder_inputs(vae)

    def too_big(module, args):
        if args[0].shape[-1] > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    vae.vae.decoder.register_forward_pre_hook(too_big)
    freed = []
    monkeypatch.setattr(devices, "free_cached_memory", lambda: freed.append(True))
    with caplog.at_level(logging.WARNING, logger=vae_codec.__name__):
        tiled = vae_codec.decode(vae, latent)
    assert seen[0] == (32, 32) and (16, 16) in seen[1:] and max(max(size) for size in seen[1:]) == 16, seen
    assert freed == [True]
    assert "ran out of memory" in caplog.text and "retrying in 128 px tiles" in caplog.text
    assert (tiled - whole).abs().mean() < 0.05
    # a tiled attempt that runs out too is not retried again: the error reaches the node
    vae.vae.decoder.register_forward_pre_hook(lambda module, args: too_big(module, (args[0].repeat(1, 1, 1, 4),)))
    with pytest.raises(torch.OutOfMemoryError):
        vae_codec.decode(vae, latent)


def test_out_of_memory_while_encoding_is_retried_in_tiles(one_thread):
    vae = Vae(tiny_vae(), Family(SD1))
    torch.manual_seed(3)
    pixels = torch.rand(1, 256, 256, 3)
    whole = vae_codec.encode(vae, pixels)

    def too_big(module, args):
        if args[0].shape[-1] > 128:
            raise torch.OutOfMemoryError("out of memory")
    vae.vae.encoder.register_forward_pre_hook(too_big)
    tiled = vae_codec.encode(vae, pixels)
    assert tiled.shape == whole.shape == (1, 4, 32, 32)
    assert (tiled - whole).abs().mean() < 0.5 * whole.abs().mean()


def overflowing_vae(dtype: torch.dtype) -> Vae:
    """A VAE whose first decoder conv overflows fp16's range (65504); GroupNorm brings it back to
    normal values in fp32 and bf16."""
    model = tiny_vae()
    with torch.no_grad():
        model.decoder.conv_in.weight.mul_(1e5)
    return Vae(model.to(dtype), Family(SD1))


def test_a_half_precision_vae_that_overflows_is_redone_in_float32_and_stays_there(caplog, one_thread):
    vae = overflowing_vae(torch.float16)
    latent = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert not torch.isfinite(vae.vae.decode(latent[:1].half()).sample).all()  # it does overflow
    with caplog.at_level(logging.WARNING, logger=vae_codec.__name__):
        images = vae_codec.decode(vae, latent)
        again = vae_codec.decode(vae, latent)
        vae_codec.encode(vae, images)
    assert torch.isfinite(images).all() and images.shape == (2, 64, 64, 3)
    assert vae.vae.dtype == torch.float32  # kept: no bf16 on this device
    assert torch.equal(images, again)
    reference = overflowing_vae(torch.float32)
    assert torch.allclose(images, vae_codec.decode(reference, latent), atol=1e-3)
    assert caplog.text.count("gave NaN/inf in float16: it now runs in float32") == 1, caplog.text
    # VAEs loaded from now on start in that precision
    assert devices.vae_dtype(torch.float16, force_upcast=False) == torch.float32


def test_the_fallback_is_bf16_where_the_device_supports_it(monkeypatch):
    monkeypatch.setattr(devices, "bf16_supported", lambda device=None: True)
    assert devices.half_fallback_dtype("cuda") == torch.bfloat16
    assert devices.vae_dtype(torch.float16, force_upcast=True, device="cuda") == torch.bfloat16
    monkeypatch.setattr(devices, "bf16_supported", lambda device=None: False)
    assert devices.half_fallback_dtype("cuda") == torch.float32


@pytest.mark.parametrize("precision, cpu, cuda, cuda_vae", [
    ("auto", torch.float32, torch.float16, torch.bfloat16),
    ("fp16", torch.float16, torch.float16, torch.float16),
    ("bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16),
    ("fp32", torch.float32, torch.float32, torch.float32),
])
def test_precision_setting(precision, cpu, cuda, cuda_vae, monkeypatch):
    monkeypatch.setattr(devices, "_precision", "auto")
    monkeypatch.setattr(devices, "bf16_supported", lambda device=None: True)
    devices.set_precision(precision)
    assert devices.default_dtype("cpu") == cpu and devices.default_dtype("cuda") == cuda
    assert devices.vae_dtype(devices.default_dtype("cuda"), force_upcast=False, device="cuda") == cuda_vae


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of auto, fp16, bf16, fp32"):
        devices.set_precision("fp8")
