"""Prompt parsing on hostile input: 1 MB prompts of bracket soup through A1111's syntax (both passes).

For each prompt: `variants` + `schedule` (prompt editing, pass 1) and `emphasis` (pass 2), timed (best
of --repeats) against a baseline measured on the same prompt in the same run: A1111's own tokeniser
for emphasis (the `re_attention` regex of its parse_prompt_attention, written out below) run over the
prompt, the least a parser of this syntax must do. Prints wall-clock and CPU seconds (on a busy shared
machine the CPU time of this process is the steadier number) and the ratio of CPU times; the bar is one
second for any 1 MB prompt, and parsing is linear when the ratio stays flat as --mb doubles.

  python bench/bench_prompt_parse.py [--mb 1.0] [--repeats 3]
"""
from __future__ import annotations

import argparse
import random
import re
import time

from inkwash.nodes.formats import prompt_syntax

# A1111's modules/prompt_parser.py re_attention: the tokens its parse_prompt_attention loops over
A1111_TOKENS = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:
""", re.X)


def soups(size: int) -> dict[str, str]:
    rng = random.Random(0)
    words = ["cat", "dog", " ", ", ", "BREAK", "AND", "0.5", "embedding:x", "e"]
    return {
        "[( repeated": "[(" * (size // 2),
        "( only": "(" * size,
        "(a nested, closed": "(a" * (size // 3) + ")" * (size // 3),
        "(word:1.2) repeated": "(word:1.2) " * (size // 11),
        "[a: chain": "[a:" * (size // 3),
        "[a:b:0.5] nested": "[a:" * (size // 9) + "b:0.5]" * (size // 9),
        "edits [a:b:1]": "[a:b:1]" * (size // 7),
        "alternations [a|b]": "[a|b]" * (size // 5),
        "escapes \\( \\) mixed": random_soup(rng, ["\\(", "\\)", "(", ")", "a", "\\"], size),
        "random []():|\\ab 1.": random_soup(rng, list("[]():|\\ab 1."), size),
        "random brackets and words": random_soup(rng, [*"[]():|\\", *words], size),
        "digits after [a:": "[a:" + "1" * size,
        "spaces": "a" + " " * size + "b",
    }


def random_soup(rng: random.Random, pieces: list[str], size: int) -> str:
    """`size` characters of pieces drawn at random."""
    drawn, length = [], 0
    while length < size:
        drawn.append(rng.choice(pieces))
        length += len(drawn[-1])
    return "".join(drawn)[:size]


def parse(prompt: str) -> None:
    prompt_syntax._tree.cache_clear()
    prompt_syntax.schedule.cache_clear()
    try:
        prompt_syntax.variants(prompt)
    except ValueError:
        pass  # too many prompt-editing variants: refused, which is an answer too
    prompt_syntax.schedule(prompt, 20)
    prompt_syntax.emphasis(prompt)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of `repeats` calls."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="prompt size in MB (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args()
    size = int(args.mb * 1_000_000)
    print(f"{'prompt':28s} {'chars':>9s} {'parse s':>8s} {'cpu s':>7s} {'A1111 tokenise cpu s':>21s} {'ratio':>6s}")
    worst = worst_cpu = 0.0
    for name, prompt in soups(size).items():
        _, baseline = timed(lambda: A1111_TOKENS.findall(prompt), args.repeats)
        wall, cpu = timed(lambda: parse(prompt), args.repeats)
        worst, worst_cpu = max(worst, wall), max(worst_cpu, cpu)
        print(f"{name:28s} {len(prompt):9d} {wall:8.3f} {cpu:7.3f} {baseline:21.4f} {cpu / max(baseline, 1e-6):6.1f}")
    print(f"slowest: {worst:.3f} s wall, {worst_cpu:.3f} s CPU")


if __name__ == "__main__":
    main()
