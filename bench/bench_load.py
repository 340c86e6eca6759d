"""Loading a single-file checkpoint: Inkwash's loader vs diffusers' `from_single_file` on the same file.

Each load runs in a fresh child process (so neither inherits the other's allocator pools) and reports
its wall time and its peak resident memory above the process's starting point; the loads alternate
and the medians are compared. Prints time and peak-memory ratios (inkwash / diffusers).

  python bench/bench_load.py               # SD 1.5 at full size, random fp16 weights (~2 GB file)
  python bench/bench_load.py --model tiny
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _peak_rss_watcher(stop, result, interval=0.005):
    import psutil

    process, peak = psutil.Process(), 0
    while not stop.is_set():
        peak = max(peak, process.memory_info().rss)
        stop.wait(interval)
    result.append(peak)


def _measure(which: str, path: str, config_dir: str, queue) -> None:
    import threading
    import time

    import psutil

    from inkwash.nodes.runtime.checkpoint_load import load_checkpoint  # imports torch and diffusers first
    from diffusers import StableDiffusionPipeline
    from inkwash.nodes.runtime.devices import default_dtype
    from inkwash.nodes.runtime.tokenizers import clip_tokenizer

    tokenizer = clip_tokenizer()
    start_rss = psutil.Process().memory_info().rss
    stop, peak = threading.Event(), []
    watcher = threading.Thread(target=_peak_rss_watcher, args=(stop, peak))
    watcher.start()
    start = time.perf_counter()
    if which == "inkwash":
        loaded = load_checkpoint(path)
    else:
        loaded = StableDiffusionPipeline.from_single_file(
            path, config=config_dir, local_files_only=True, tokenizer=tokenizer, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False, torch_dtype=default_dtype())  # the dtype Inkwash loads in
    elapsed = time.perf_counter() - start
    stop.set()
    watcher.join()
    del loaded
    queue.put({"which": which, "seconds": elapsed, "peak_bytes": peak[0] - start_rss})


def _write_diffusers_configs(path: Path, folder: Path) -> None:
    """The config folder diffusers needs for this file, written from the model Inkwash loads (so both
    build the same architecture, tiny or full size)."""
    from inkwash.nodes.runtime.checkpoint_load import load_checkpoint

    model, clip, vae = load_checkpoint(path)
    for name, module in (("unet", model.unet), ("vae", vae.vae)):
        module.save_config(folder / name)
    clip.encoders[0].config.save_pretrained(folder / "text_encoder")
    (folder / "scheduler").mkdir(parents=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {**model.scheduler_config, "_class_name": "PNDMScheduler"}))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "sd15"], default="sd15")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from bench_models import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = write_checkpoint(Path(tmp) / "checkpoints", args.model)
        config_dir = Path(tmp) / "config"
        _write_diffusers_configs(path, config_dir)
        ctx = mp.get_context("spawn")
        results: dict[str, list[dict]] = {"inkwash": [], "diffusers": []}
        for _ in range(args.repeats):
            for which in ("diffusers", "inkwash"):
                queue = ctx.Queue()
                child = ctx.Process(target=_measure, args=(which, str(path), str(config_dir), queue))
                child.start()
                results[which].append(queue.get())
                child.join()
        size_mb = path.stat().st_size / 2**20
        med = {w: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_bytes")}
               for w, rs in results.items()}
        print(f"model={args.model} file={size_mb:.0f} MiB")
        for which in ("diffusers", "inkwash"):
            print(f"  {which:9s} {med[which]['seconds']:.2f}s  peak +{med[which]['peak_bytes'] / 2**20:.0f} MiB")
        print(f"[3] load  time ratio inkwash/diffusers {med['inkwash']['seconds'] / med['diffusers']['seconds']:.3f}"
              f"   peak-memory ratio {med['inkwash']['peak_bytes'] / max(med['diffusers']['peak_bytes'], 1):.3f}")


if __name__ == "__main__":
    main()
