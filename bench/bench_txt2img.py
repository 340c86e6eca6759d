"""txt2img through the executor vs diffusers' StableDiffusionPipeline on the same components.

Prints, from one run:
  1. time ratio (executor / pipeline) for the same steps and seed, and the largest pixel difference
     between the two images (Euler on ComfyUI's "simple" schedule, which is diffusers' Euler with
     "trailing" timesteps);
  2. a second executor run with only the seed changed vs the first (models already loaded): time ratio
     and which nodes ran.

  python bench/bench_txt2img.py                       # tiny SD1-shaped model, 64x64, CPU
  python bench/bench_txt2img.py --model sd15 --size 512   # full SD 1.5 size (fp16 on a CUDA GPU)
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import write_checkpoint  # noqa: E402

from inkwash.nodes import folders as folders_module  # noqa: E402
from inkwash.nodes.executor import Executor  # noqa: E402
from inkwash.nodes.registry import core_nodes  # noqa: E402
from inkwash.nodes.runtime import noise, sigmas  # noqa: E402

PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"


def workflow(ckpt: str, size: int, steps: int, seed: int, sampler: str, scheduler: str, cfg: float,
             prompt: str = PROMPT, negative: str = NEGATIVE) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bench", "images": ["8", 0]}},
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = folders_module.configure(models_dir=tmp / "models", output_dir=tmp / "out")
        ckpt = write_checkpoint(folders.models_dir / "checkpoints", args.model)
        registry = core_nodes()
        executor = Executor(registry)
        seed = 1234
        wf = workflow(ckpt.name, args.size, args.steps, seed, "euler", "simple", args.cfg)

        # Load once (and warm up) through the executor; the pipeline gets the very same modules.
        first = executor.execute(copy.deepcopy(wf))
        assert first.status == "success", first.error
        # the loader node answers from the model cache: these are the executor's own modules
        model, clip, vae = registry["CheckpointLoaderSimple"]().run(ckpt_name=ckpt.name)
        device = str(model.unet.device)

        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
        scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="trailing")
        pipe = StableDiffusionPipeline(vae=vae.vae, text_encoder=clip.encoders[0], tokenizer=clip.tokenizers[0],
                                       unet=model.unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        latent_shape = (4, args.size // 8, args.size // 8)

        def run_pipeline():
            # ComfyUI's starting noise; diffusers scales it by sigma_max, ComfyUI by sqrt(1 + sigma_max^2)
            sigma_max = sigmas.DiscreteSchedule(model.scheduler_config).sigma_max
            start = noise.batch_noise(seed, (1, *latent_shape)) * (1 + sigma_max ** 2) ** 0.5 / sigma_max
            start = start.to(device, model.unet.dtype)
            return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=args.steps, guidance_scale=args.cfg,
                        height=args.size, width=args.size, latents=start, output_type="np").images[0]

        def run_executor(run_seed: int):
            executor.clear_cache()  # everything re-runs; the model cache keeps the weights loaded
            return executor.execute(workflow(ckpt.name, args.size, args.steps, run_seed, "euler",
                                             "simple", args.cfg))

        run_pipeline()  # warm-up
        pipe_times, exec_times = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            t, pipe_image = timed(run_pipeline, device)
            pipe_times.append(t)
            t, result = timed(lambda: run_executor(seed), device)
            exec_times.append(t)
        saved = result.outputs["9"]["images"][0]
        ours = np.asarray(Image.open(folders.output_dir / saved["subfolder"] / saved["filename"]), dtype=np.int16)
        theirs = np.round(np.clip(pipe_image, 0, 1) * 255).astype(np.int16)
        t_pipe, t_exec = statistics.median(pipe_times), statistics.median(exec_times)

        print(f"model={args.model} size={args.size} steps={args.steps} sampler=euler/simple "
              f"device={device} dtype={model.unet.dtype}")
        print(f"[1] txt2img  pipeline {t_pipe:.3f}s ({args.steps / t_pipe:.2f} it/s)   "
              f"executor {t_exec:.3f}s ({args.steps / t_exec:.2f} it/s)   ratio executor/pipeline "
              f"{t_exec / t_pipe:.3f}   max pixel diff {int(np.abs(ours - theirs).max())}/255")

        # 2. only the seed changes: the loader, prompts and empty latent come from the cache.
        base_times, seed_times, ran = [], [], []
        for i in range(args.repeats):
            t_first, _ = timed(lambda: run_executor(seed), device)
            changed = workflow(ckpt.name, args.size, args.steps, seed + 1 + i, "euler", "simple",
                               args.cfg)
            t_second, second = timed(lambda: executor.execute(changed), device)
            base_times.append(t_first)
            seed_times.append(t_second)
            ran = second.executed
        t_first, t_second = statistics.median(base_times), statistics.median(seed_times)
        print(f"[2] seed change  first run {t_first:.3f}s   seed-only run {t_second:.3f}s   "
              f"ratio {t_second / t_first:.3f}   nodes run: {', '.join(ran)} "
              f"(cached: {', '.join(second.cached)})")


if __name__ == "__main__":
    main()
