"""Loading and applying a LoRA file: Inkwash's patches vs diffusers' `load_lora_weights` (+ `fuse_lora`).

Both read the same kohya-format file (rank 16 on every attention, feed-forward and projection layer of
the UNet and the text encoder, as kohya's default LoRA) into copies of the same model:

  inkwash    read the file, map its keys (LoraLoader), add the deltas into the weights (what happens
             before each sampling run); restoring the originals afterwards is timed on its own
  diffusers  pipe.load_lora_weights (PEFT adapters injected), then pipe.fuse_lora (deltas merged into
             the weights, so both end with the same patched weights; checked)

Runs alternate and medians are compared. Prints time ratios (inkwash / diffusers).

  python bench/bench_lora.py                  # SD1-shaped UNet at half SD 1.5's width, full CLIP-L
  python bench/bench_lora.py --model sd15     # SD 1.5 at full size (fp16 on a CUDA GPU)
  python bench/bench_lora.py --model demo     # the bundled demo checkpoint (models/checkpoints)
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import full_size_sd15
from inkwash.nodes.folders import REPO_ROOT
from inkwash.nodes.runtime import devices, lora
from inkwash.nodes.runtime.model_configs import CONFIG_ROOT, read_config
from inkwash.nodes.runtime.model_types import SD1, DiffusionModel, Family, TextEncoder
from inkwash.nodes.runtime.tokenizers import clip_tokenizer

DEMO = REPO_ROOT / "models" / "checkpoints" / "inkwash-demo.safetensors"
# kohya's default LoRA targets: Linear and 1x1 Conv layers inside these modules
UNET_TARGETS, TEXT_TARGETS = ("attentions",), ("self_attn", "mlp")


def build_model(which: str, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel
    from tiny_models import tiny_vae
    from transformers import CLIPTextConfig, CLIPTextModel

    if which == "demo":
        from inkwash.nodes.runtime.checkpoint_load import load_checkpoint

        model, clip, vae = load_checkpoint(DEMO)
        return model, clip, vae.vae
    if which == "sd15":
        model, clip, vae = full_size_sd15(dtype)
        return model, clip, vae.vae
    folder = CONFIG_ROOT / "sd15"
    torch.manual_seed(0)
    config = {**read_config(folder, "unet"), "block_out_channels": [160, 320, 640, 640]}
    unet = UNet2DConditionModel.from_config(config).to(dtype)
    text = CLIPTextModel(CLIPTextConfig.from_dict(read_config(folder, "text_encoder"))).to(dtype)
    family = Family(SD1)
    return (DiffusionModel(unet, family, read_config(folder, "scheduler")),
            TextEncoder([clip_tokenizer()], [text], family), tiny_vae())


def write_kohya_lora(path: Path, model, clip, rank: int = 16) -> int:
    """A kohya-format file (diffusers module names, as kohya writes SD 1.x LoRAs); returns its size."""
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for prefix, component, targets in (("lora_unet_", model.unet, UNET_TARGETS),
                                       ("lora_te_", clip.encoders[0], TEXT_TARGETS)):
        for name, module in component.named_modules():
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) or not any(t in name for t in targets):
                continue
            weight = module.weight
            if prefix == "lora_te_" and not name.startswith("text_model."):
                name = "text_model." + name  # transformers 5 dropped this level; files keep it
            key = prefix + name.replace(".", "_")
            down = torch.randn(rank, *weight.shape[1:], generator=generator)
            up = torch.randn(weight.shape[0], rank, *[1] * (weight.ndim - 2), generator=generator)
            tensors[key + ".lora_down.weight"] = (down * 0.01).half()
            tensors[key + ".lora_up.weight"] = (up * 0.01).half()
            tensors[key + ".alpha"] = torch.tensor(rank / 2, dtype=torch.float16)
    save_file(tensors, str(path))
    return path.stat().st_size


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_inkwash(path: Path, model, clip, device, keep: bool = False) -> tuple[float, float, dict | None]:
    """(read + map + patch seconds, restore seconds, the patched UNet weights if `keep`)."""
    lora._read_cached.cache_clear()  # read the file each run, as after a change on disk
    sync(device)
    start = time.perf_counter()
    patched_model, patched_clip = lora.with_lora(model, clip, lora.read_lora(path), 1.0, 1.0)
    with lora.applied(patched_model), lora.applied(patched_clip):
        sync(device)
        applied = time.perf_counter() - start
        weights = {k: v.clone() for k, v in model.unet.state_dict().items()} if keep else None
        sync(device)
        start = time.perf_counter()
    sync(device)
    return applied, time.perf_counter() - start, weights


def time_diffusers(path: Path, pipe, device, keep: bool = False) -> tuple[float, float, dict | None]:
    """(load_lora_weights seconds, fuse_lora seconds, the fused UNet weights if `keep`); unfused and
    unloaded after."""
    sync(device)
    start = time.perf_counter()
    pipe.load_lora_weights(str(path))
    sync(device)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    pipe.fuse_lora(lora_scale=1.0)
    sync(device)
    fused = time.perf_counter() - start
    weights = {k.replace(".base_layer", ""): v.clone() for k, v in pipe.unet.state_dict().items()
               if "lora_" not in k} if keep else None
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    return loaded, fused, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mid", "sd15", "demo"], default="mid")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.model == "demo" and not DEMO.is_file():
        sys.exit(f"{DEMO} is missing: train it (./inkwash.sh train-demo) or pick another --model")

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    device = devices.default_device()
    dtype = devices.default_dtype(device)
    model, clip, vae = build_model(args.model, dtype)
    model.unet.to(device, dtype)
    clip.encoders[0].to(device, dtype)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=copy.deepcopy(clip.encoders[0]), tokenizer=clip.tokenizers[0],
                                   unet=copy.deepcopy(model.unet),
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-lora.safetensors"
        size = write_kohya_lora(path, model, clip, args.rank)
        ours, theirs = [], []
        for _ in range(args.repeats):
            theirs.append(time_diffusers(path, pipe, device))
            ours.append(time_inkwash(path, model, clip, device))
        # one more run of each, untimed, to compare the patched weights
        expected, patched = time_diffusers(path, pipe, device, keep=True)[2], time_inkwash(path, model, clip, device,
                                                                                           keep=True)[2]
        difference = max((patched[k].float() - expected[k].float()).abs().max().item() for k in patched)

    params = sum(p.numel() for p in model.unet.parameters()) / 1e6
    patch, restore = (statistics.median(r[i] for r in ours) for i in (0, 1))
    load, fuse = (statistics.median(r[i] for r in theirs) for i in (0, 1))
    print(f"model={args.model} unet={params:.0f}M params {dtype} on {device}; LoRA rank {args.rank}, "
          f"{size / 2**20:.1f} MiB; {args.repeats} runs each, medians")
    print("  runs (inkwash patch, diffusers load+fuse): "
          + ", ".join(f"{o[0]:.2f}/{t[0] + t[1]:.2f}" for o, t in zip(ours, theirs)))
    print(f"  inkwash    read+map+patch {patch:.3f}s   restore {restore:.3f}s")
    print(f"  diffusers  load_lora_weights {load:.3f}s   fuse_lora {fuse:.3f}s")
    print(f"  same patched UNet weights: largest difference {difference:.2e}")
    print(f"[lora] load+apply time ratio inkwash/diffusers (load+fuse) {patch / (load + fuse):.3f}"
          f"   vs load_lora_weights alone {patch / load:.3f}")


if __name__ == "__main__":
    main()
