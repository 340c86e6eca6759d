"""Prompt encoding: a 300-token prompt with A1111 weights and prompt editing vs a plain 75-token prompt.

All on a full-size CLIP-L text encoder (SD 1.5's config, random weights: the cost is the same):

  raw        the encoder called once on the plain prompt's 77 token ids (what diffusers' encode_prompt
             does for a short prompt): the baseline
  plain 75   text_encode.encode on a 75-token prompt: tokenizing, one window, final layer norm
  weighted   text_encode.encode on a 300-token prompt with (word:1.3), [word], ((word)) and one
             [from:to:when] edit: four windows per text, twice (the edit gives two texts)

Runs alternate; medians are compared. Prints the ratios to the plain prompt and to the raw call.

  python bench/bench_prompts.py [--repeats 9]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from inkwash.nodes.runtime import devices, text_encode
from inkwash.nodes.runtime.model_configs import CONFIG_ROOT, read_config
from inkwash.nodes.runtime.model_types import SD1, Family, TextEncoder
from inkwash.nodes.runtime.tokenizers import clip_tokenizer

WORDS = ("red", "circle", "blue", "background", "large", "small", "star", "corner")


def plain_prompt(tokens: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(tokens))


def weighted_prompt(tokens: int) -> str:
    """About `tokens` CLIP tokens: every fourth word emphasised in one of A1111's ways, one edit."""
    forms = ("({}:1.3)", "[{}]", "(({}))", "{}")
    words = [forms[i % 4].format(WORDS[i % len(WORDS)]) for i in range(tokens - 4)]
    return "[cat:dog:0.5] " + " ".join(words)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    device = devices.default_device()
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig.from_dict(read_config(CONFIG_ROOT / "sd15", "text_encoder")))
    encoder = encoder.to(device).eval()
    tokenizer = clip_tokenizer()
    clip = TextEncoder([tokenizer], [encoder], Family(SD1))

    plain, weighted = plain_prompt(75), weighted_prompt(300)
    counted = len(tokenizer(plain, add_special_tokens=False)["input_ids"])
    windows = text_encode.encode(clip, weighted)
    ids = torch.tensor([tokenizer(plain, padding="max_length", max_length=77, truncation=True)["input_ids"]],
                       device=device)

    def raw():
        with torch.no_grad():
            encoder(ids)

    runs = {"raw": raw, "plain 75": lambda: text_encode.encode(clip, plain),
            "weighted 300": lambda: text_encode.encode(clip, weighted)}
    for fn in runs.values():  # warm-up
        fn()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name] += timed(fn, 1)
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"device {device}; plain prompt {counted} tokens; weighted prompt -> {len(windows)} texts x "
          f"{windows[0].embeds.shape[1] // 77} windows")
    for name, seconds in median.items():
        print(f"{name:>13}: {seconds * 1000:8.1f} ms")
    print(f"ratio weighted 300 / plain 75: {median['weighted 300'] / median['plain 75']:.2f} "
          f"(the work: {len(windows) * windows[0].embeds.shape[1] // 77} windows vs 1)")
    print(f"ratio plain 75 / raw encoder call: {median['plain 75'] / median['raw']:.2f}")


if __name__ == "__main__":
    main()
