"""Live previews by preview method: TAESD / TAESDXL decoders from models/vae_approx/ (ComfyUI's file
names and madebyollin's key layout, or diffusers' AutoencoderTiny forms), latent2rgb otherwise."""
from __future__ import annotations

import logging
import queue

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_taesd_decoder

from inkwash.nodes.runtime.latent_preview import MAX_SIZE, latent2rgb_image, preview_image, previewing
from inkwash.nodes.runtime.model_types import SD1, SD2, SDXL, SDXL_REFINER, Family

SD, XL = Family(SD1), Family(SDXL)
PREVIEW_LOG = "inkwash.nodes.runtime.latent_preview"


def latent(h: int = 8, w: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(4, h, w, generator=torch.Generator().manual_seed(seed)) * 2


def comfyui_taesd_pixels(model, x: torch.Tensor) -> np.ndarray:
    """What ComfyUI's TAESD previewer draws: the decoder network's [0, 1] output (after TAESD's clamp of
    the latent), .sub(0.5).mul(2), clamped to [-1, 1], then (x + 1) * 127.5 rounded."""
    with torch.no_grad():
        raw = model.decoder.layers(torch.tanh(x[None] / 3) * 3)[0]
    image = raw.sub(0.5).mul(2).clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return image.permute(1, 2, 0).numpy()


def test_auto_uses_the_familys_taesd_decoder_when_its_file_is_there(folders):
    x = latent()
    with previewing("auto"):
        assert preview_image(x, SD).size == (8, 8)  # no file yet: latent2rgb, one pixel per latent pixel
        write_tiny_taesd_decoder(folders.models_dir / "vae_approx", "taesd_decoder.pth")
        assert preview_image(x, SD).size == (64, 64)  # TAESD: the full image size
        assert preview_image(x, Family(SD2)).size == (64, 64)
        assert np.array_equal(np.asarray(preview_image(x, XL)), np.asarray(latent2rgb_image(x, XL)))
        write_tiny_taesd_decoder(folders.models_dir / "vae_approx", "taesdxl_decoder.safetensors", seed=3)
        assert preview_image(x, XL).size == (64, 64)
        assert preview_image(x, Family(SDXL_REFINER)).size == (64, 64)


def test_taesd_preview_is_the_autoencoder_tiny_decode_shown_as_comfyui_shows_it(folders):
    _, sd_model = write_tiny_taesd_decoder(folders.models_dir / "vae_approx", "taesd_decoder.pth", seed=1)
    _, xl_model = write_tiny_taesd_decoder(folders.models_dir / "vae_approx", "taesdxl_decoder.pth", seed=2)
    x = latent(8, 6)
    with previewing("taesd"):
        assert np.array_equal(np.asarray(preview_image(x, SD)), comfyui_taesd_pixels(sd_model, x))
        assert np.array_equal(np.asarray(preview_image(x, XL)), comfyui_taesd_pixels(xl_model, x))
        assert not np.array_equal(comfyui_taesd_pixels(sd_model, x), comfyui_taesd_pixels(xl_model, x))
        # a 1024x640 latent image: decoded at full size, then made MAX_SIZE on its longest side
        big = latent(128, 80, seed=2)
        expected = Image.fromarray(comfyui_taesd_pixels(sd_model, big))
        expected.thumbnail((MAX_SIZE, MAX_SIZE))
        shown = preview_image(big[None], SD)
    assert shown.size == (320, 512)
    assert np.array_equal(np.asarray(shown), np.asarray(expected))


def test_diffusers_autoencoder_tiny_forms_are_read_too(folders):
    from safetensors.torch import save_file
    from tiny_models import tiny_taesd

    model = tiny_taesd(seed=4)
    model.save_pretrained(folders.models_dir / "vae_approx" / "taesd")  # madebyollin/taesd's HF repo form
    xl_model = tiny_taesd(seed=5)  # AutoencoderTiny's own key names in a single file
    save_file({k: v.contiguous() for k, v in xl_model.state_dict().items()},
              str(folders.models_dir / "vae_approx" / "taesdxl_decoder.safetensors"))
    x = latent()
    with previewing("auto"):
        assert np.array_equal(np.asarray(preview_image(x, SD)), comfyui_taesd_pixels(model, x))
        assert np.array_equal(np.asarray(preview_image(x, XL)), comfyui_taesd_pixels(xl_model, x))


def test_a_decoder_in_an_extra_model_path_is_found(folders, tmp_path):
    _, model = write_tiny_taesd_decoder(tmp_path / "a1111" / "models" / "VAE-taesd", "taesd_decoder.pth")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"a111:\n  base_path: {tmp_path / 'a1111'}\n  vae_approx: models/VAE-taesd\n")
    folders.load_extra_model_paths(config)
    x = latent()
    with previewing("auto"):
        assert np.array_equal(np.asarray(preview_image(x, SD)), comfyui_taesd_pixels(model, x))


def test_latent2rgb_ignores_the_decoder_and_none_gives_no_preview(folders):
    write_tiny_taesd_decoder(folders.models_dir / "vae_approx", "taesd_decoder.pth")
    x = latent()
    with previewing("latent2rgb"):
        shown = preview_image(x, SD)
    assert shown.size == (8, 8) and np.array_equal(np.asarray(shown), np.asarray(latent2rgb_image(x, SD)))
    with previewing("none"):
        assert preview_image(x, SD) is None


def test_taesd_without_its_file_warns_once_and_uses_latent2rgb(folders, caplog):
    x = latent()
    with caplog.at_level(logging.WARNING, logger=PREVIEW_LOG):
        with previewing("taesd"):
            shown = [preview_image(x, SD) for _ in range(3)]
        with previewing("auto"):  # auto is quiet about a decoder that is not there
            preview_image(x, SD)
    assert all(np.array_equal(np.asarray(s), np.asarray(latent2rgb_image(x, SD))) for s in shown)
    warnings = [r.getMessage() for r in caplog.records if r.name == PREVIEW_LOG]
    assert len(warnings) == 1 and "vae_approx/taesd_decoder" in warnings[0]


def test_a_corrupt_decoder_falls_back_with_one_warning_and_the_job_still_runs(folders, checkpoint, tmp_path,
                                                                             caplog, one_thread):
    from test_comfy_protocol import txt2img

    from inkwash.nodes.registry import core_nodes
    from inkwash.webui.events import EventHub
    from inkwash.webui.jobs import JobQueue

    bad = folders.models_dir / "vae_approx" / "taesd_decoder.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 this is not a torch file")
    hub = EventHub()
    events = hub.subscribe("tab")
    jobs = JobQueue(tmp_path / "jobs.sqlite3", core_nodes(), hub)
    try:
        jobs.start()
        with caplog.at_level(logging.WARNING, logger=PREVIEW_LOG):
            job = jobs.wait(jobs.submit(txt2img(), client_id="tab").id, timeout=300)  # the tabs' jobs: auto
    finally:
        jobs.close()
    assert job.status == "success", job.error
    previews = []
    while True:
        try:
            name, data = events.get_nowait()
        except queue.Empty:
            break
        if name == "progress":
            previews.append(data["preview"])
    assert len(previews) == 2 and all(p.size == (8, 8) for p in previews)  # latent2rgb for both steps
    warnings = [r.getMessage() for r in caplog.records if r.name == PREVIEW_LOG]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "latent2rgb" in warnings[0]
    assert [m[1]["message"] for m in job.messages if m[0] == "execution_warning"] == warnings


@pytest.mark.parametrize("content", [b"", b"not safetensors at all"])
def test_unreadable_safetensors_decoder_falls_back(folders, content, caplog):
    path = folders.models_dir / "vae_approx" / "taesd_decoder.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger=PREVIEW_LOG), previewing("auto"):
        assert preview_image(latent(), SD).size == (8, 8)
    assert len([r for r in caplog.records if r.name == PREVIEW_LOG]) == 1


def test_a_decoder_for_other_latents_falls_back_with_one_warning(folders, caplog):
    from safetensors.torch import save_file
    from tiny_models import tiny_taesd

    model = tiny_taesd()
    conv_in = model.decoder.layers[0]
    model.decoder.layers[0] = torch.nn.Conv2d(16, conv_in.out_channels, 3, padding=1)  # a 16-channel family's
    (folders.models_dir / "vae_approx").mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folders.models_dir / "vae_approx" / "taesd_decoder.safetensors"))
    x = latent()
    with caplog.at_level(logging.WARNING, logger=PREVIEW_LOG), previewing("taesd"):
        shown = [preview_image(x, SD) for _ in range(2)]
    assert all(np.array_equal(np.asarray(s), np.asarray(latent2rgb_image(x, SD))) for s in shown)
    assert len([r for r in caplog.records if r.name == PREVIEW_LOG]) == 1


def test_the_decoder_lookup_is_kept_until_its_folder_changes(folders, monkeypatch):
    import os
    import time

    from inkwash.nodes.runtime import taesd

    approx = folders.models_dir / "vae_approx"
    approx.mkdir()
    long_ago = time.time() - 60
    os.utime(approx, (long_ago, long_ago))
    listings = []
    listed = type(folders).list
    monkeypatch.setattr(type(folders), "list", lambda self, kind: listings.append(kind) or listed(self, kind))
    assert [taesd.find_decoder(SD) for _ in range(5)] == [None] * 5
    assert listings == ["vae_approx"]  # looked once, not at every step
    write_tiny_taesd_decoder(approx, "taesd_decoder.pth")  # added during the job: the folder changes
    assert taesd.find_decoder(SD) == approx / "taesd_decoder.pth"
    assert taesd.find_decoder(XL) is None
