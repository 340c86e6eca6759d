"""Inkwash on a CUDA GPU against diffusers' pipelines, in one run, written to a JSON file and to a table
in docs/performance.md that names the GPU.

  python bench/bench_gpu.py           # on a CUDA machine: full-size SD 1.5 and SDXL, random weights
  python bench/bench_gpu.py --smoke   # any machine: tiny models at 64x64, the same code paths

Measured (full size, fp16 by --precision auto, 20 Euler steps, CFG 7):
  1. SD 1.5-shaped, 512x512: Inkwash's txt2img workflow vs StableDiffusionPipeline on the very same modules:
     sampling it/s, seconds per image, peak VRAM, and the ratio Inkwash / diffusers (it/s);
  2. the same with --compile (torch.compile of the UNet; the compiling run is timed apart);
  3. SDXL-shaped, 1024x1024, vs StableDiffusionXLPipeline;
  4. SD 1.5 at 512x512 under a 3 GiB cap and SDXL at 1024x1024 under 6 GiB
     (torch.cuda.set_per_process_memory_fraction), each in a process of its own: finished or not, time;
  5. the time from starting `inkwash run` to its first saved image (SD 1.5, 512x512, 20 steps).
Models are built from the shipped configs with random weights (bench_models.py); nothing is downloaded.
Without a CUDA device (and without --smoke) it says so and exits (status 0: `./inkwash.sh bench` goes on
with the other benchmarks).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT, NEGATIVE = "a lighthouse on a cliff at dusk, oil painting", "blurry, low quality"
SEED, CFG = 1234, 7.0
GIB = 2 ** 30
MARK_START, MARK_END = "<!-- bench_gpu: start -->", "<!-- bench_gpu: end -->"
# (checkpoint builder in bench_models, size, steps, memory cap in GiB), full size and --smoke
FULL = {"sd15": ("sd15", 512, 20, 3), "sdxl": ("sdxl", 1024, 20, 6)}
SMOKE = {"sd15": ("tiny", 64, 2, 3), "sdxl": ("tiny-sdxl", 64, 2, 6)}
NAMES = {"sd15": "SD 1.5-shaped", "sdxl": "SDXL-shaped"}


def workflow(ckpt: str, size: int, steps: int, seed: int = SEED) -> dict:
    import bench_txt2img

    return bench_txt2img.workflow(ckpt, size, steps, seed, "euler", "simple", CFG, PROMPT, NEGATIVE)


# -- measuring -------------------------------------------------------------------------------------------

def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Steps:
    """Timestamps of sampler steps (after the device finished them): it/s over the steps after the first."""

    def __init__(self):
        self.stamps: list[float] = []

    def __call__(self, *_) -> None:
        sync()
        self.stamps.append(time.perf_counter())

    def it_per_s(self) -> float | None:
        if len(self.stamps) < 2:
            return None
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


def measured(run) -> dict:
    """run(steps: Steps) once: seconds, sampling it/s and peak device memory (GiB; None off CUDA)."""
    import torch

    steps = Steps()
    if cuda():
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    run(steps)
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / GIB if cuda() else None
    return {"seconds": round(seconds, 3), "it_s": _round(steps.it_per_s()), "peak_gib": _round(peak)}


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def inkwash_run(executor, wf: dict):
    def run(steps: Steps):
        executor.clear_cache()  # every node runs; the model cache keeps the weights loaded
        result = executor.execute(copy.deepcopy(wf), on_event=lambda event, data: steps()
                                  if event == "progress" and data.get("node") == "3" else None)
        if result.status != "success":
            raise RuntimeError(f"Inkwash's run failed: {result.error and result.error['exception_message']}")
    return run


def pipeline_run(family: str, model, clip, vae, size: int, steps_count: int):
    """diffusers' pipeline on Inkwash's own modules; Euler with "trailing" timesteps is the schedule of
    Inkwash's euler/simple. Latents come out of the pipeline and go through the same VAE decode call."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="trailing")
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae.vae, text_encoder=clip.encoders[0], text_encoder_2=clip.encoders[1],
            tokenizer=clip.tokenizers[0], tokenizer_2=clip.tokenizers[1], unet=model.unet, scheduler=scheduler,
            add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline(
            vae=vae.vae, text_encoder=clip.encoders[0], tokenizer=clip.tokenizers[0], unet=model.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu")

    def run(steps: Steps):
        def on_step(pipeline, index, timestep, tensors):
            steps()
            return tensors
        latents = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps_count, guidance_scale=CFG,
                       height=size, width=size, generator=generator.manual_seed(SEED), output_type="latent",
                       callback_on_step_end=on_step).images
        with torch.no_grad():
            model_vae = vae.vae
            model_vae.decode(latents.to(model_vae.dtype) / vae.scaling_factor).sample.float().cpu()
    return run


def compare(family: str, ckpt: str, size: int, steps_count: int, repeats: int, compile_backend: str | None) -> dict:
    """Inkwash vs the pipeline (and Inkwash with --compile), interleaved so drift hits both alike."""
    from inkwash.nodes.executor import Executor
    from inkwash.nodes.registry import core_nodes
    from inkwash.nodes.runtime import devices, model_cache, unet_compile

    registry = core_nodes()
    executor = Executor(registry)
    wf = workflow(ckpt, size, steps_count)
    ours = inkwash_run(executor, wf)
    ours(Steps())  # loads the checkpoint, warms up
    model, clip, vae = registry["CheckpointLoaderSimple"]().run(ckpt_name=ckpt)  # the executor's modules
    theirs = pipeline_run(family, model, clip, vae, size, steps_count)
    theirs(Steps())  # warm-up
    runs = {"inkwash": [], "diffusers": []}
    for _ in range(repeats):
        runs["diffusers"].append(measured(theirs))
        runs["inkwash"].append(measured(ours))
    result = {"size": size, "steps": steps_count, "dtype": str(model.unet.dtype).removeprefix("torch."),
              "vae_dtype": str(vae.vae.dtype).removeprefix("torch."),
              **{name: _best(items) for name, items in runs.items()}}
    result["ratio"] = _ratio(result["inkwash"]["it_s"], result["diffusers"]["it_s"])
    if compile_backend:
        unet_compile.set_compile(True, backend=compile_backend)
        result["compile_backend"] = compile_backend
        try:
            result["compile_first_run"] = measured(ours)  # compiles for this shape
            result["inkwash_compiled"] = _best([measured(ours) for _ in range(repeats)])
        finally:
            unet_compile.set_compile(False)
        result["compiled_ratio"] = _ratio(result["inkwash_compiled"]["it_s"], result["diffusers"]["it_s"])
    del model, clip, vae, theirs, ours
    executor.clear_cache()
    model_cache.shared().clear()
    devices.free_cached_memory()
    return result


def _best(runs: list[dict]) -> dict:
    """The run with the median time."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def _ratio(ours, theirs):
    return None if not ours or not theirs else round(ours / theirs, 3)


# -- runs in processes of their own ----------------------------------------------------------------------

def capped_child(cap_gib: float, ckpt: str, size: int, steps_count: int, models: str, output: str) -> None:
    """One txt2img under a device memory cap; prints one JSON line."""
    import torch

    from inkwash.nodes import folders
    from inkwash.nodes.executor import Executor
    from inkwash.nodes.registry import core_nodes

    folders.configure(models_dir=Path(models), output_dir=Path(output))
    applied = torch.cuda.is_available()
    if applied:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GIB / total))
    executor = Executor(core_nodes())
    outcome = {}

    def run(steps: Steps):
        result = executor.execute(workflow(ckpt, size, steps_count), on_event=lambda event, data: steps()
                                  if event == "progress" else None)
        outcome["status"] = result.status
        outcome["error"] = result.error["exception_message"] if result.error else None
    numbers = measured(run)
    print(json.dumps({"cap_gib": cap_gib, "cap_applied": applied, **outcome, **numbers}), flush=True)


def capped(cap_gib: float, ckpt: str, size: int, steps_count: int, models: Path, output: Path) -> dict:
    command = [sys.executable, __file__, "--capped-child", str(cap_gib), ckpt, str(size), str(steps_count),
               str(models), str(output)]
    done = subprocess.run(command, capture_output=True, text=True, env=_child_env())
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"cap_gib": cap_gib, "status": "crashed", "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def first_image(ckpt: str, size: int, steps_count: int, models: Path, output: Path, folder: Path) -> dict:
    """Seconds from starting `inkwash run` to its exit with the image saved."""
    path = folder / "first_image.json"
    path.write_text(json.dumps(workflow(ckpt, size, steps_count)))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inkwash.webui.cli", "run", str(path), "--models-dir", str(models),
                           "--output-dir", str(output)], capture_output=True, text=True, env=_child_env())
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "status": "success" if done.returncode == 0 else "failed",
            "error": None if done.returncode == 0 else (done.stdout + done.stderr).strip().splitlines()[-1:]}


def _child_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1")


# -- writing the results ---------------------------------------------------------------------------------

def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / GIB:.0f} GiB)"
    return "CPU (smoke run: tiny models, numbers say nothing about speed)"


def markdown(results: dict) -> str:
    def gib(value):
        return "-" if value is None else f"{value:.2f} GiB"

    def num(value, unit=""):
        return "-" if value is None else f"{value:.2f}{unit}"

    lines = [MARK_START, f"## GPU benchmark: {results['device']}", "",
             f"`python bench/bench_gpu.py{' --smoke' if results['smoke'] else ''}` on {results['date']}; "
             f"torch {results['torch']}, diffusers {results['diffusers']}. Random weights in the real "
             "architectures, Euler, CFG 7; it/s over the sampling steps, seconds for the whole image "
             "(prompt encoding, sampling, VAE decode). Ratio: Inkwash it/s / diffusers it/s.", "",
             "| Model | Size, steps | dtype (VAE) | Inkwash it/s | diffusers it/s | ratio | Inkwash s | "
             "diffusers s | peak VRAM Inkwash | peak VRAM diffusers |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for family, case in results["compare"].items():
        ours, theirs = case["inkwash"], case["diffusers"]
        lines.append(f"| {NAMES[family]} | {case['size']}x{case['size']}, {case['steps']} | {case['dtype']} "
                     f"({case['vae_dtype']}) | {num(ours['it_s'])} | {num(theirs['it_s'])} | {num(case['ratio'])} | "
                     f"{num(ours['seconds'])} | {num(theirs['seconds'])} | {gib(ours['peak_gib'])} | "
                     f"{gib(theirs['peak_gib'])} |")
        if "inkwash_compiled" in case:
            compiled = case["inkwash_compiled"]
            lines.append(f"| {NAMES[family]}, `--compile` ({case['compile_backend']}) | "
                         f"{case['size']}x{case['size']}, {case['steps']} | {case['dtype']} ({case['vae_dtype']}) | {num(compiled['it_s'])} | {num(theirs['it_s'])} | "
                         f"{num(case['compiled_ratio'])} | {num(compiled['seconds'])} (compiling run "
                         f"{num(case['compile_first_run']['seconds'])}) | {num(theirs['seconds'])} | "
                         f"{gib(compiled['peak_gib'])} | {gib(theirs['peak_gib'])} |")
    lines += ["", "| Under a memory cap | Cap | Result | Time | Peak VRAM |", "|---|---|---|---|---|"]
    for family, run in results["capped"].items():
        size = results["compare_sizes"][family]
        status = run.get("status", "?")
        if status != "success":
            status += f": {run.get('error')}"
        applied = "" if run.get("cap_applied") else " (not applied: no CUDA)"
        lines.append(f"| {NAMES[family]} {size}x{size} | {run['cap_gib']} GiB{applied} | {status} | "
                     f"{num(run.get('seconds'), ' s')} | {gib(run.get('peak_gib'))} |")
    first = results["first_image"]
    lines += ["", f"Time from starting `inkwash run` to the first saved image ({NAMES['sd15']}, "
                  f"{results['compare_sizes']['sd15']}x{results['compare_sizes']['sd15']}): "
                  f"{num(first['seconds'], ' s')} ({first['status']}; the checkpoint file was just written, so "
                  "it is read from the OS cache).", MARK_END]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, section: str) -> None:
    text = path.read_text() if path.is_file() else "# Performance\n\n"
    if MARK_START in text and MARK_END in text:
        before, rest = text.split(MARK_START, 1)
        text = before + section.rstrip("\n") + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- main ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes, on whatever device there is")
    parser.add_argument("--json", type=Path, help="result file (default bench/results/gpu.json; "
                                                  "--smoke: in a temporary folder)")
    parser.add_argument("--markdown", type=Path, help="table goes here (default docs/performance.md; "
                                                      "--smoke: in a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--capped-child", nargs=6, metavar=("GIB", "CKPT", "SIZE", "STEPS", "MODELS", "OUTPUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.capped_child:
        cap, ckpt, size, steps_count, models, output = args.capped_child
        capped_child(float(cap), ckpt, int(size), int(steps_count), models, output)
        return 0
    if not args.smoke and not cuda():
        print("bench_gpu: no CUDA device here; nothing measured. Run it on a machine with an NVIDIA GPU, "
              "or with --smoke to check the code paths on tiny models.", file=sys.stderr)
        return 0

    import diffusers
    import torch

    from inkwash.nodes import folders as folders_module
    from bench_models import write_checkpoint

    cases = SMOKE if args.smoke else FULL
    with tempfile.TemporaryDirectory(prefix="inkwash-bench-gpu-") as tmp:
        tmp = Path(tmp)
        json_path = args.json or (tmp / "gpu.json" if args.smoke else REPO / "bench/results/gpu.json")
        md_path = args.markdown or (tmp / "performance.md" if args.smoke else REPO / "docs/performance.md")
        models, output = tmp / "models", tmp / "output"
        checkpoints = {family: write_checkpoint(models / "checkpoints", builder).name
                       for family, (builder, *_) in cases.items()}
        print(f"checkpoints written: {', '.join(checkpoints.values())}", flush=True)
        # processes of their own first, while this one holds no device memory
        _, size, steps_count, _ = cases["sd15"]
        first = first_image(checkpoints["sd15"], size, steps_count, models, output, tmp)
        print(f"first image: {first}", flush=True)
        capped_runs = {}
        for family, (_, size, steps_count, cap) in cases.items():
            capped_runs[family] = capped(cap, checkpoints[family], size, steps_count, models, output)
            print(f"{family} under {cap} GiB: {capped_runs[family]}", flush=True)
        folders_module.configure(models_dir=models, output_dir=output)
        compared = {}
        for family, (_, size, steps_count, _) in cases.items():
            # --smoke compiles with the "eager" backend: the same capture and per-shape cache, without
            # inductor's minutes of code generation on a CPU
            backend = ("eager" if args.smoke else "inductor") if family == "sd15" else None
            compared[family] = compare(family, checkpoints[family], size, steps_count, args.repeats, backend)
            print(f"{family}: {json.dumps(compared[family])}", flush=True)
        results = {"device": device_name(), "smoke": args.smoke, "date": datetime.date.today().isoformat(),
                   "torch": torch.__version__, "diffusers": diffusers.__version__, "compare": compared,
                   "compare_sizes": {family: case[1] for family, case in cases.items()},
                   "capped": capped_runs, "first_image": first}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        write_markdown(md_path, markdown(results))
        print(markdown(results))
        print(f"written: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
