"""Prompt parsing on hostile input: 1 MB prompts of bracket soup through A1111's syntax (both passes).

For each prompt: `schedule` + `variants` (prompt editing, pass 1) and `emphasis` (pass 2), timed
against a baseline measured on the same prompt in the same run: one regex tokenisation of it
(`_EMPHASIS_TOKEN.findall`), the least any parser must do. Prints seconds and the ratio; parsing is
linear when the ratio stays flat as the size doubles.

  python bench/bench_prompt_parse.py [--mb 1.0]
"""
from __future__ import annotations

import argparse
import random
import time

from inkwash.nodes.formats import prompt_syntax


def soups(size: int) -> dict[str, str]:
    rng = random.Random(0)
    return {
        "[( repeated": "[(" * (size // 2),
        "( only": "(" * size,
        "(a nested, closed": "(a" * (size // 4) + ")" * (size // 4),
        "[a: chain": "[a:" * (size // 3),
        "edits [a:b:1]": "[a:b:1]" * (size // 7),
        "alternations [a|b]": "[a|b]" * (size // 5),
        "random []():|\\ab 1.": "".join(rng.choice("[]():|\\ab 1.") for _ in range(size)),
        "digits after [a:": "[a:" + "1" * size,
        "spaces": "a" + " " * size + "b",
    }


def parse(prompt: str) -> None:
    prompt_syntax._tree.cache_clear()
    prompt_syntax.schedule.cache_clear()
    try:
        prompt_syntax.variants(prompt)
    except ValueError:
        pass  # too many prompt-editing variants: refused, which is an answer too
    prompt_syntax.schedule(prompt, 20)
    prompt_syntax.emphasis(prompt)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="prompt size in MB (default 1)")
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    print(f"{'prompt':28s} {'chars':>9s} {'parse s':>9s} {'tokenise s':>11s} {'ratio':>7s}")
    worst = 0.0
    for name, prompt in soups(size).items():
        baseline = timed(lambda: prompt_syntax._EMPHASIS_TOKEN.findall(prompt))
        seconds = timed(lambda: parse(prompt))
        worst = max(worst, seconds)
        print(f"{name:28s} {len(prompt):9d} {seconds:9.3f} {baseline:11.4f} {seconds / max(baseline, 1e-9):7.1f}")
    print(f"slowest: {worst:.3f} s")


if __name__ == "__main__":
    main()
