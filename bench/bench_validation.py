"""Workflow validation on hostile graphs: linear in nodes + links means doubling the graph doubles the
time. Prints seconds at n and 2n and their ratio (2.0 is linear, 4.0 quadratic) for a self-loop before a
long chain and for as many outputs as chain nodes.

  python bench/bench_validation.py [--nodes 4000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from inkwash.nodes import graph  # noqa: E402
from inkwash.nodes.registry import core_nodes  # noqa: E402
from test_hardening_graph import chain  # noqa: E402


def seconds(workflow: dict, registry, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        graph.validate(workflow, registry)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4000)
    args = parser.parse_args()
    registry, n = core_nodes(), args.nodes
    cases = {"self-loop + chain": lambda size: chain(size), "outputs over a chain": lambda size: chain(size // 2, size // 2)}
    for name, make in cases.items():
        small, large = seconds(make(n), registry), seconds(make(2 * n), registry)
        print(f"{name:22s} n={n}: {small:.3f} s  2n: {large:.3f} s  ratio {large / small:.2f}")


if __name__ == "__main__":
    main()
