"""SD's CLIP tokenizer, built offline from the BPE vocabulary that ships in the open_clip_torch wheel.

The derivation is open_clip's SimpleTokenizer: 256 byte symbols, the same with `</w>`, the first
48,894 merges, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407): 49,408 tokens.
"""
from __future__ import annotations

import functools
import gzip

from transformers import CLIPTokenizer

MAX_LENGTH = 77
_MERGE_COUNT = 49152 - 256 - 2


def _bytes_to_unicode() -> list[str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    # open_clip orders the printable bytes first, then the remapped ones
    return [chr(b) for b in printable] + [c for b, c in enumerate(chars) if b not in printable]


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from open_clip.tokenizer import default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:_MERGE_COUNT + 1]]
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=2)
def clip_tokenizer(pad_with_zero: bool = False) -> CLIPTokenizer:
    """The CLIP-L tokenizer of SD1/SDXL, or with `pad_with_zero` the OpenCLIP one of SD2 and SDXL's
    second encoder (which pads with token 0, "!")."""
    vocab, merges = vocabulary()
    kwargs = {"pad_token": "!"} if pad_with_zero else {}
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=MAX_LENGTH, **kwargs)
