"""The cost of drawing an NVIDIA GPU's random numbers on the CPU (nodes/runtime/philox.py: the a1111_nv
and comfyui_nv noise rules) against torch's CPU generator (the a1111 and comfyui rules), for the
latents people sample: milliseconds per draw (best of --repeats) and their ratio. An ancestral sampler
draws once per step, so compare the Philox figure with a step's time on your GPU.

  python bench/bench_noise.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import time

import torch

from inkwash.nodes.runtime import philox

SHAPES = {"SD 1.5 512x512": (1, 4, 64, 64), "SD 1.5 512x512, batch 4": (4, 4, 64, 64),
          "SDXL 1024x1024": (1, 4, 128, 128), "SDXL 1024x1024, batch 4": (4, 4, 128, 128)}


def best_ms(draw, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        draw()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"{'latent':26s} {'Philox (NVIDIA numbers)':>24s} {'torch CPU':>10s} {'ratio':>6s}")
    for name, shape in SHAPES.items():
        nvidia, cpu = philox.PhiloxGenerator(1), torch.Generator().manual_seed(1)
        slow = best_ms(lambda: nvidia.randn(shape), args.repeats)
        fast = best_ms(lambda: torch.randn(shape, generator=cpu), args.repeats)
        print(f"{name:26s} {slow:21.2f} ms {fast:7.2f} ms {slow / fast:6.1f}")


if __name__ == "__main__":
    main()
