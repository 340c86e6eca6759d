"""Train the bundled demo models from scratch, stage by stage, on two CPU cores in about 1 h 40 min.

    python -m inkwash.demo.train [--stage NAME ...] [--minutes M] [--restart] [--out build/demo]

Stages run in order, each resumable: it checkpoints every ~2 minutes, a re-run continues where it
stopped, and a finished stage is skipped (until --restart). Training minutes on two idle cores of an
AVX-512 machine with AMX (the UNet and ControlNet stages train under bfloat16 autocast there, about
1.9x faster, as on AMD CPUs with AVX-512 BF16; elsewhere in float32, and on an AVX2-only machine every
step takes about 1.4x as long again):

    vae               14   AutoencoderKL 128x128 -> 4x16x16 (a fixed 3,900 steps); then encodes the
                           dataset once (~3 min)
    vae_decoder        9   its decoder fine-tuned on those latents, encoder frozen (a fixed 1,500 steps)
    unet              38   CLIP text encoder + UNet on the cached latents (a fixed 3,600 steps)
    unet_layout       14   fine-tuned to place objects where the prompt says (a fixed 1,400 steps)
    unet_corners       7   fine-tuned on more two-object scenes with one in a corner (a fixed 600 steps)
    controlnet_canny   5   ControlNet on canny edges, UNet frozen (a fixed 700 steps)
    controlnet_depth   5   ControlNet on depth maps, UNet frozen (a fixed 700 steps)
    depth              8   the small depth estimator (an annotator)
    assemble           -   single files in models/, reloaded through the studio's loaders

The minutes are for an idle machine. Beside other work, start training with GOMP_SPINCOUNT=1000: torch's
OpenMP threads spin while they wait, and two processes spinning on two cores starve each other (steps
5-10x slower); alone, that short spin makes a step 13% (float32) to 35% (bfloat16) slower.

Progress goes to stdout; each stage's folder under --out gets loss.csv, sample grids and its result.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import diffusers
import torch
import transformers

from ..nodes import folders
from . import train_assemble, train_controlnet, train_depth, train_unet, train_vae
from .train_common import Settings, StageDir

# name -> (run(settings) -> finished?, stages whose results it needs)
STAGES = {
    "vae": (train_vae.run, ()),
    "vae_decoder": (train_vae.run_decoder, ("vae",)),
    "unet": (train_unet.run, ("vae", "vae_decoder")),
    "unet_layout": (partial(train_unet.run, name="unet_layout"), ("vae", "vae_decoder", "unet")),
    "unet_corners": (partial(train_unet.run, name="unet_corners"), ("vae", "vae_decoder", "unet_layout")),
    "controlnet_canny": (partial(train_controlnet.run, name="controlnet_canny"),
                         ("vae", "vae_decoder", "unet_corners")),
    "controlnet_depth": (partial(train_controlnet.run, name="controlnet_depth"),
                         ("vae", "vae_decoder", "unet_corners")),
    "depth": (train_depth.run, ()),
    "assemble": (train_assemble.run, ("vae", "vae_decoder", "unet", "unet_layout", "unet_corners",
                                      "controlnet_canny", "controlnet_depth", "depth")),
}


def parse_args(argv: list[str] | None) -> tuple[list[str], Settings, bool]:
    parser = argparse.ArgumentParser(prog="python -m inkwash.demo.train", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", nargs="+", choices=list(STAGES), metavar="NAME",
                        help=f"stages to run (default: all, in order): {', '.join(STAGES)}")
    parser.add_argument("--minutes", type=float, help="wall time each stage may run in this run; it then "
                                                      "checkpoints and stops, to be continued by the next run")
    parser.add_argument("--restart", action="store_true", help="start the selected stages over")
    parser.add_argument("--out", type=Path, default=Path("build/demo"), help="build folder (default build/demo)")
    parser.add_argument("--models", type=Path, help="models folder to write the results to "
                                                    "(default: the studio's models folder)")
    parser.add_argument("--images", type=int, default=Settings.images, help="world images to train on")
    parser.add_argument("--seed", type=int, default=0)
    smoke = parser.add_argument_group("smoke tests")
    smoke.add_argument("--steps", type=int, help="train each stage for this many steps, not for its time budget")
    smoke.add_argument("--batch", type=int, help="batch size of every stage")
    smoke.add_argument("--stop-after", type=int, metavar="STEPS", help="pause each stage after this many steps")
    args = parser.parse_args(argv)
    settings = Settings(out=args.out, models=args.models or folders.current().models_dir, images=args.images,
                        seed=args.seed, minutes=args.minutes, steps=args.steps, batch=args.batch,
                        stop_after=args.stop_after)
    selected = [name for name in STAGES if args.stage is None or name in args.stage]
    return selected, settings, args.restart


def main(argv: list[str] | None = None) -> int:
    selected, settings, restart = parse_args(argv)
    torch.set_num_threads(2)
    diffusers.utils.logging.disable_progress_bar()  # their per-file bars would swamp the progress lines
    transformers.utils.logging.disable_progress_bar()
    if restart:
        for name in selected:
            StageDir(settings, name).clear()
        stale = [name for name in STAGES if name not in selected and StageDir(settings, name).is_done()
                 and any(need in selected for need in STAGES[name][1])]
        if stale:
            print(f"note: {', '.join(stale)} were built on the results being retrained; "
                  f"add them to --stage to retrain them too", flush=True)
    for name in selected:
        stage = StageDir(settings, name)
        if stage.is_done():
            print(f"[{name}] already done (--restart to train it again)", flush=True)
            continue
        missing = [need for need in STAGES[name][1] if not StageDir(settings, need).is_done()]
        if missing:
            print(f"[{name}] needs the {', '.join(missing)} stage(s) first", file=sys.stderr, flush=True)
            return 2
        print(f"[{name}] starting", flush=True)
        started = time.monotonic()
        finished = STAGES[name][0](settings)
        minutes = (time.monotonic() - started) / 60
        if not finished:
            print(f"[{name}] stopped after {minutes:.1f} min; run the same command again to continue", flush=True)
            return 0
        print(f"[{name}] finished in {minutes:.1f} min", flush=True)
    print("all selected stages are done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
