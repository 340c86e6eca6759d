"""The memory manager's decisions, against a simulated device budget (a number of bytes, computing on the CPU)."""
import logging

import numpy as np
import pytest
import torch
from diffusers.hooks.group_offloading import _is_group_offload_enabled
from PIL import Image
from tiny_models import tiny_sd1

from inkwash.nodes.executor import Executor
from inkwash.nodes.runtime import memory_manager, sampling, text_encode, vae_codec
from inkwash.nodes.runtime.memory_manager import DEVICE, RAM, STREAMED, SimulatedDevice, module_bytes
from inkwash.webui import cli, serve_options

pytestmark = pytest.mark.usefixtures("one_thread")

UNLIMITED = 10 ** 12
TE, UNET, VAE = "CLIPTextModel", "UNet2DConditionModel", "AutoencoderKL"


@pytest.fixture
def manager():
    """The shared manager, its records emptied, put back to its default afterwards."""
    shared = memory_manager.shared()
    shared.moves.clear()
    yield shared
    shared.listeners.clear()
    shared.configure("auto")
    shared.moves.clear()


@pytest.fixture
def snapshots(manager):
    seen = []
    manager.listeners.append(seen.append)
    return seen


def txt2img(seed: int, prefix: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd1.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": seed, "steps": 2, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def run(executor: Executor, folders, seed: int, prefix: str) -> np.ndarray:
    result = executor.execute(txt2img(seed, prefix))
    assert result.status == "success", result.error
    saved = result.outputs["7"]["images"][0]
    return np.asarray(Image.open(folders.output_dir / saved["subfolder"] / saved["filename"]))


def sizes() -> dict:
    model, clip, vae = tiny_sd1()
    return {"unet": module_bytes(model.unet), "clip": module_bytes(clip.encoders[0]), "vae": module_bytes(vae.vae),
            "unet_activation": memory_manager.unet_activation_bytes(model.unet, (1, 4, 8, 8), rows=2),
            "vae_activation": vae_codec.activation_bytes(vae, (8, 8), "decode")}


def weight_moves(manager) -> list:
    return [m for m in manager.moves if m.what != "intermediate"]


# -- a budget smaller than the three models -----------------------------------------------------------------

def test_txt2img_keeps_only_the_model_in_use_resident_and_gives_the_same_pixels(
        folders, checkpoint, registry, manager, snapshots, fresh_model_cache):
    manager.configure("normal", device=SimulatedDevice(UNLIMITED))
    unlimited = run(Executor(registry), folders, 1, "unlimited")
    assert {s.wanted for s in snapshots} == {(TE,), (UNET,), (VAE,)}
    assert set(snapshots[-1].resident) == {TE, UNET, VAE}  # everything fits: everything stays

    size = sizes()
    budget = size["unet"] + size["unet_activation"] + 200_000  # the UNet at work, and a little over
    assert budget < size["unet"] + size["clip"] + size["vae"]
    assert budget < size["unet"] + size["vae"] + size["vae_activation"]
    manager.configure("normal", device=SimulatedDevice(budget))
    snapshots.clear()
    manager.moves.clear()
    limited = run(Executor(registry), folders, 1, "limited")

    assert np.array_equal(limited, unlimited)
    assert [s.wanted for s in snapshots if s.wanted != (TE,)] == [(UNET,), (VAE,)]
    for snapshot in snapshots:  # during every node: only the model it runs is on the device
        assert snapshot.resident == snapshot.wanted and not snapshot.streamed, snapshot
        assert snapshot.placed_bytes + snapshot.activation_bytes <= budget, snapshot
    to_device = [m.what for m in weight_moves(manager) if m.to == DEVICE]
    back = [m.what for m in weight_moves(manager) if m.to == RAM]
    assert to_device == [TE, UNET, VAE] and back == [TE, UNET]  # each in once, made room for the next


def test_a_seed_only_rerun_moves_no_weights(folders, checkpoint, registry, manager, fresh_model_cache):
    manager.configure("normal", device=SimulatedDevice(UNLIMITED))
    executor = Executor(registry)
    first = run(executor, folders, 1, "first")
    assert {m.what for m in weight_moves(manager)} == {TE, UNET, VAE}
    manager.moves.clear()

    second = run(executor, folders, 2, "second")
    assert not np.array_equal(first, second)  # the sampler and the decode ran again
    assert weight_moves(manager) == []


def test_cached_intermediates_are_moved_off_the_device_not_recomputed(
        folders, checkpoint, registry, manager, fresh_model_cache):
    size = sizes()
    manager.configure("normal", device=SimulatedDevice(UNLIMITED))
    reference = run(Executor(registry), folders, 2, "reference")

    budget = size["unet"] + size["unet_activation"] + 200_000
    manager.configure("normal", device=SimulatedDevice(budget))
    executor = Executor(registry)
    manager.watch(executor)
    run(executor, folders, 1, "first")
    conditioning = [e for e in executor.cached_entries() if e.outputs and isinstance(e.outputs[0], list)]
    cond_bytes = conditioning[0].outputs[0][0].embeds.numel() * 4
    spilled = [m.bytes for m in manager.moves if m.what == "intermediate" and m.to == RAM]
    assert spilled.count(cond_bytes) == 2  # room was made with both prompts' encodings

    manager.moves.clear()
    result = executor.execute(txt2img(2, "second"))
    assert result.status == "success"
    assert set(result.executed) == {"5", "6", "7"}  # the prompts' encodings were used from RAM
    assert TE not in [m.what for m in manager.moves]
    saved = result.outputs["7"]["images"][0]
    second = np.asarray(Image.open(folders.output_dir / saved["subfolder"] / saved["filename"]))
    assert np.array_equal(second, reference)


def test_cached_outputs_leave_the_device_oldest_first_and_keep_their_values(manager):
    """Cached outputs leave the device oldest first, only as many as make the room asked for, and keep
    their values (LATENT dicts, CONDITIONING lists of Conds with their extras)."""
    from inkwash.nodes.executor import CachedNode
    from inkwash.nodes.runtime.model_types import Cond

    class Holder:
        def __init__(self):
            self.entries = [CachedNode(({"samples": torch.ones(1, 4, 8, 8)},), {}),
                            CachedNode(([Cond(torch.ones(1, 77, 32), extra={"mask": torch.ones(8, 8)})],), {})]

        def cached_entries(self):
            return self.entries

    holder = Holder()
    manager.configure("normal", device=SimulatedDevice(UNLIMITED))
    manager.watch(holder)
    latent_bytes, cond_bytes = 4 * 64 * 4, (77 * 32 + 64) * 4
    assert manager.placed_bytes() == latent_bytes + cond_bytes
    assert manager.free_memory(UNLIMITED - cond_bytes)  # moving the oldest entry is enough
    assert manager.placed_bytes() == cond_bytes
    assert [m.bytes for m in manager.moves] == [latent_bytes]
    assert torch.equal(holder.entries[0].outputs[0]["samples"], torch.ones(1, 4, 8, 8))
    manager.release_all()
    assert manager.placed_bytes() == 0
    moved = holder.entries[1].outputs[0][0]
    assert isinstance(moved, Cond) and torch.equal(moved.extra["mask"], torch.ones(8, 8))


# -- a budget smaller than the UNet: streamed in groups of blocks ---------------------------------------------

def generate(model, clip, vae, seed=3):
    positive, negative = text_encode.encode(clip, "a red cat"), text_encode.encode(clip, "blurry")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = sampling.sample(model, positive, negative, latent, seed, 2, 7.0, "euler", "normal")
    return vae_codec.decode(vae, out["samples"])


def test_a_unet_larger_than_the_budget_is_streamed_and_gives_the_same_image(manager, snapshots, caplog):
    model, clip, vae = tiny_sd1()
    manager.configure("normal", device=SimulatedDevice(UNLIMITED))
    reference = generate(model, clip, vae)
    assert manager.where(model.unet) == DEVICE

    streamed_during_sampling = []
    manager.listeners.append(lambda s: streamed_during_sampling.append(_is_group_offload_enabled(model.unet))
                             if s.wanted == (UNET,) else None)
    budget = module_bytes(model.unet) // 2
    assert budget > module_bytes(clip.encoders[0]) // 2 and budget > module_bytes(vae.vae)
    manager.configure("normal", device=SimulatedDevice(budget))
    assert manager.where(model.unet) == RAM
    manager.moves.clear()
    with caplog.at_level(logging.WARNING, logger=memory_manager.__name__):
        image = generate(model, clip, vae)
        again = generate(model, clip, vae)

    assert torch.equal(image, reference) and torch.equal(again, reference)
    assert streamed_during_sampling == [True, True]
    assert manager.where(model.unet) == STREAMED
    assert manager.where(clip.encoders[0]) == STREAMED  # over the budget too: leaf by leaf
    assert manager.where(vae.vae) == DEVICE
    assert [m.to for m in manager.moves if m.what == UNET] == [STREAMED]  # chosen once, kept between jobs
    assert sum("sampling with offloaded weights: slower" in r.getMessage() for r in caplog.records) == 1

    manager.configure("normal", device=SimulatedDevice(UNLIMITED))  # room again: whole on the device
    assert not _is_group_offload_enabled(model.unet)
    assert torch.equal(generate(model, clip, vae), reference)
    assert manager.where(model.unet) == DEVICE


def test_a_controlnet_comes_with_the_unet_and_streams_with_it_when_both_do_not_fit(manager, snapshots):
    from tiny_models import tiny_controlnet

    from inkwash.nodes.runtime import control

    model, clip, vae = tiny_sd1()
    control_net = tiny_controlnet()

    def controlled():
        positive, negative = text_encode.encode(clip, "a red cat"), text_encode.encode(clip, "blurry")
        positive, negative = control.apply(positive, negative, control_net, torch.rand(1, 64, 64, 3,
                                           generator=torch.Generator().manual_seed(0)), 0.8)
        out = sampling.sample(model, positive, negative, {"samples": torch.zeros(1, 4, 8, 8)}, 3, 2, 7.0, "euler",
                              "normal")
        return out["samples"]

    manager.configure("normal", device=SimulatedDevice(UNLIMITED))
    reference = controlled()
    sampling_view = next(s for s in snapshots if UNET in s.wanted)
    assert sampling_view.wanted == (UNET, "ControlNetModel") and set(sampling_view.resident) >= {UNET, "ControlNetModel"}

    unet, cnet = module_bytes(model.unet), module_bytes(control_net.model)
    manager.configure("normal", device=SimulatedDevice(unet + cnet // 2))  # the two do not fit together
    snapshots.clear()
    assert torch.equal(controlled(), reference)
    sampling_view = next(s for s in snapshots if UNET in s.wanted)
    assert sampling_view.streamed == (UNET,) and sampling_view.resident == ("ControlNetModel",)  # largest first


def test_fits_counts_what_could_be_moved_off(manager):
    model, clip, vae = tiny_sd1()
    unet, encoder, decoder = module_bytes(model.unet), module_bytes(clip.encoders[0]), module_bytes(vae.vae)
    manager.configure("normal", device=SimulatedDevice(unet + decoder))
    with manager.using(model):
        assert not manager.fits(vae, decoder + 1)  # the UNet is in use: it stays
        assert manager.fits(vae, 0)
    assert manager.where(model.unet) == DEVICE
    assert manager.fits(clip, unet + decoder - encoder)  # the idle UNet would go back to RAM
    assert not manager.fits(clip, unet + decoder - encoder + 1)
    assert manager.fits(model, decoder) and not manager.fits(model, decoder + 1)  # on the device already
    assert manager.where(model.unet) == DEVICE and manager.moves == [memory_manager.Move(UNET, DEVICE, unet)]


def test_gpu_free_memory_is_the_drivers_less_a_reserve_within_the_budget(monkeypatch):
    gib = 2 ** 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * gib, 8 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: gib)  # 1 GiB held by torch, unused
    unbounded = memory_manager.GpuDevice("cuda")
    assert unbounded.free_bytes(placed=gib) == 4 * gib - memory_manager.CUDA_RESERVE
    budgeted = memory_manager.GpuDevice("cuda", budget=2 * gib)
    assert budgeted.free_bytes(placed=gib + 100) == gib - 100


# -- modes ----------------------------------------------------------------------------------------------------

def test_low_mode_streams_the_unet_and_keeps_nothing_else_between_nodes(manager, snapshots):
    model, clip, vae = tiny_sd1()
    manager.configure("normal", device=SimulatedDevice(UNLIMITED))
    reference = generate(model, clip, vae)
    manager.configure("low", device=SimulatedDevice(UNLIMITED))
    snapshots.clear()
    assert torch.equal(generate(model, clip, vae), reference)
    sampling_view = next(s for s in snapshots if s.wanted == (UNET,))
    assert sampling_view.streamed == (UNET,) and sampling_view.resident == ()
    assert next(s for s in snapshots if s.wanted == (VAE,)).resident == (VAE,)
    assert manager.resident() == []  # the text encoder and VAE left when they were done


def test_high_mode_keeps_every_model_even_over_the_budget(manager):
    model, clip, vae = tiny_sd1()
    manager.configure("high", device=SimulatedDevice(module_bytes(model.unet)))
    generate(model, clip, vae)
    assert sorted(manager.resident()) == sorted([TE, UNET, VAE])
    assert all(m.to == DEVICE for m in manager.moves)


def test_cpu_mode_moves_nothing(manager):
    model, clip, vae = tiny_sd1()
    memory_manager.configure("cpu")
    assert manager.torch_device.type == "cpu" and manager.dtype() == torch.float32
    generate(model, clip, vae)
    assert manager.moves == [] and manager.resident() == []


@pytest.mark.parametrize("argv, mode, budget", [
    ([], "auto", None),
    (["--vram", "low"], "low", None),
    (["--vram", "high", "--vram-budget", "6"], "high", 6.0),
    (["--vram", "cpu"], "cpu", None),
])
def test_vram_options_parse_for_run_and_serve_and_set_the_manager(manager, argv, mode, budget, monkeypatch):
    args = cli.build_parser().parse_args(["run", "workflow.json", *argv])
    assert (args.vram, args.vram_budget) == (mode, budget)
    options = serve_options.resolve(cli.build_parser().parse_args(["serve", *argv]), iterations=1)
    assert (options.vram, options.vram_budget_gb) == (mode, budget)

    configured = []
    monkeypatch.setattr(memory_manager, "device_for", lambda m, b=None: configured.append((m, b)) or SimulatedDevice(1))
    serve_options.apply_memory_options(options.vram, options.vram_budget_gb)
    if argv:
        assert manager.mode == mode and configured == [(mode, None if budget is None else int(budget * 2 ** 30))]
    else:
        assert configured == []  # the default leaves the manager (and torch) alone


def test_vram_options_refuse_bad_values(capsys):
    for argv in (["--vram", "medium"], ["--vram-budget", "-1"], ["--vram-budget", "lots"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["run", "workflow.json", *argv])
        assert "--vram" in capsys.readouterr().err
