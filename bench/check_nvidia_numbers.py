"""On an NVIDIA GPU: are the random numbers Inkwash computes on the CPU for the a1111_nv and comfyui_nv
noise rules (nodes/runtime/philox.py) the ones torch draws on this GPU? Compares, for latent shapes and
several seeds, consecutive torch.randn draws of a CUDA generator and the increments of a torchsde
Brownian tree built on the GPU. Prints the largest differences and how many values this card draws in
one pass (past that its numbers are its own); exits 1 when a shape within that differs by more than 1e-5.
Without CUDA it says so and exits 0.

  python bench/check_nvidia_numbers.py
"""
from __future__ import annotations

import sys

import torch

from inkwash.nodes.runtime import noise, philox

SHAPES = [(4, 64, 64), (2, 4, 64, 64), (4, 128, 128), (2, 4, 128, 128), (4, 4, 128, 128)]
SEEDS = [0, 1, 42, 2 ** 32 + 5, 2 ** 64 - 1]
TOLERANCE = 1e-5


def randn_difference(shape, seed: int, draws: int = 3) -> float:
    gpu = torch.Generator("cuda").manual_seed(seed)
    ours = philox.PhiloxGenerator(seed)
    worst = 0.0
    for _ in range(draws):
        theirs = torch.randn(shape, generator=gpu, device="cuda").cpu()
        worst = max(worst, float((theirs - ours.randn(shape)).abs().max()))
    return worst


def tree_difference(shape, seed: int) -> float:
    import torchsde

    t0, t1 = torch.tensor(0.03), torch.tensor(14.6)
    on_gpu = torchsde.BrownianTree(t0.cuda(), torch.zeros(shape, device="cuda"), t1.cuda(), entropy=seed)
    ours = noise._BrownianTrees((1, *shape), 0.03, 14.6, [seed], batched=True, nvidia_numbers=True)
    worst = 0.0
    for a, b in ((14.6, 7.0), (7.0, 1.0), (1.0, 0.03)):
        # from sigma a down to b: the tree's increment over [b, a], negated (ComfyUI's and k-diffusion's sign)
        theirs = (-on_gpu(torch.tensor(b).cuda(), torch.tensor(a).cuda()) / abs(a - b) ** 0.5).cpu()
        worst = max(worst, float((theirs - ours(a, b)[0]).abs().max()))
    return worst


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to compare")
        return 0
    props = torch.cuda.get_device_properties(0)
    one_pass = props.multi_processor_count * props.max_threads_per_multi_processor
    print(f"{props.name}: {one_pass} values per pass of torch's random kernel")
    failed = False
    for shape in SHAPES:
        count = int(torch.tensor(shape).prod())
        randn = max(randn_difference(shape, seed) for seed in SEEDS)
        tree = max(tree_difference(shape[-3:], seed) for seed in SEEDS[:3])
        within = count <= one_pass
        failed |= within and max(randn, tree) > TOLERANCE
        print(f"{str(shape):20s} {count:8d} values{'' if within else ' (over one pass)':16s} "
              f"randn max |diff| {randn:.2e}   Brownian tree max |diff| {tree:.2e}")
    print("FAILED" if failed else "the same numbers")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
