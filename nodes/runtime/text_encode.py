"""Prompt text -> CONDITIONING, encoded the way diffusers' `encode_prompt` and A1111 do.

* Tokens are cut into 75-token chunks; each is encoded as its own 77-token window (start token,
  the chunk, end token, padding) and the windows are concatenated, so prompts have no length limit.
* `stop_at_clip_layer` is ComfyUI's CLIPSetLastLayer value: -1 is the encoder's last layer, -2 the
  penultimate (A1111's "Clip skip 2", diffusers' clip_skip=1). SD1/SD2 take that layer's hidden state
  through the final layer norm.
* SDXL takes each encoder's hidden state one layer deeper (-1 -> hidden_states[-2]) without the final
  norm, concatenates CLIP-L and CLIP-G features, and adds the pooled, projected CLIP-G embedding.
* Prompt weights: `parse_prompt` turns text into (text, weight) segments. It returns the plain text
  with weight 1; an emphasis-syntax parser replaces it without touching the encoding below.
"""
from __future__ import annotations

import torch

from .model_types import Cond, TextEncoder

CHUNK = 75  # prompt tokens per 77-token window


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """Prompt text as (text, weight) segments."""
    return [(text, 1.0)]


def encode(clip: TextEncoder, text: str) -> list[Cond]:
    """CONDITIONING for one prompt."""
    return encode_segments(clip, parse_prompt(text))


def encode_segments(clip: TextEncoder, segments: list[tuple[str, float]]) -> list[Cond]:
    """CONDITIONING for weighted prompt segments: embeds [1, 77 * chunks, D], plus pooled for SDXL."""
    features, pooled = [], None
    for tokenizer, encoder in zip(clip.tokenizers, clip.encoders):
        windows = [_encode_window(encoder, ids, weights, clip)
                   for ids, weights in _token_windows(tokenizer, segments)]
        features.append(torch.cat([hidden for hidden, _ in windows], dim=1))
        pooled = windows[0][1]  # SDXL pools from its last encoder (CLIP-G), first window, as ComfyUI
    if len({f.shape[1] for f in features}) != 1:
        raise ValueError("the text encoders tokenized the prompt into different lengths")
    return [Cond(torch.cat(features, dim=-1), pooled=pooled if clip.family.is_xl else None)]


def _token_windows(tokenizer, segments: list[tuple[str, float]]) -> list[tuple[list[int], list[float]]]:
    """Token ids and weights in 77-token windows: start, up to 75 prompt tokens, end, padding."""
    ids: list[int] = []
    weights: list[float] = []
    for text, weight in segments:
        tokens = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        ids += tokens
        weights += [weight] * len(tokens)
    windows = []
    for start in range(0, max(len(ids), 1), CHUNK):
        chunk, chunk_weights = ids[start:start + CHUNK], weights[start:start + CHUNK]
        padding = CHUNK - len(chunk)
        windows.append(([tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * padding,
                        [1.0, *chunk_weights, 1.0] + [1.0] * padding))
    return windows


def _encode_window(encoder, ids: list[int], weights: list[float], clip: TextEncoder):
    """(hidden state [1, 77, D], pooled projection [1, P] or None) of one token window."""
    layer = clip.stop_at_clip_layer
    depth = encoder.config.num_hidden_layers
    if not -depth <= layer <= -1:
        raise ValueError(f"stop_at_clip_layer {layer} is outside this text encoder's {depth} layers")
    with torch.no_grad():
        out = encoder(torch.tensor([ids], device=encoder.device), output_hidden_states=True)
        if clip.family.is_xl:
            hidden = out.hidden_states[layer - 1]
        else:
            # transformers 5 flattens CLIPTextModel (final_layer_norm on the model); the projection
            # model still nests it under text_model
            final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
            hidden = final_norm(out.hidden_states[layer])
        if any(w != 1.0 for w in weights):
            hidden = _apply_weights(hidden, weights)
    return hidden, getattr(out, "text_embeds", None)


def _apply_weights(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """A1111's emphasis: scale each token's features by its weight, then restore the overall mean."""
    mean = hidden.mean()
    weighted = hidden * torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)[None, :, None]
    return weighted * (mean / weighted.mean())
