"""Prompt text -> CONDITIONING, encoded the way diffusers' `encode_prompt` and A1111 do.

* Tokens are cut into 75-token chunks; each is encoded as its own 77-token window (start token,
  the chunk, end token, padding) and the windows are concatenated, so prompts have no length limit.
* `stop_at_clip_layer` is ComfyUI's CLIPSetLastLayer value: -1 is the encoder's last layer, -2 the
  penultimate (A1111's "Clip skip 2", diffusers' clip_skip=1). SD1/SD2 take that layer's hidden state
  through the final layer norm.
* SDXL takes each encoder's hidden state one layer deeper (-1 -> hidden_states[-2]) without the final
  norm, concatenates CLIP-L and CLIP-G features, and adds the pooled, projected CLIP-G embedding.
* A1111's prompt syntax (prompt_syntax.py): a prompt with prompt editing or alternation is encoded
  once per text it can schedule; each Cond records (prompt, text) in extra["prompt_schedule"] and the
  sampler uses, at each step, the one A1111's schedule selects. Emphasis gives (text, weight) segments.
"""
from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple

import torch

from ..formats import prompt_syntax
from . import embeddings, lora, memory_manager
from .model_types import Cond, TextEncoder

CHUNK = 75  # prompt tokens per 77-token window
# token id at embedding positions (its embedding is replaced); never the end token pooling looks for
_EMBEDDING_PLACEHOLDER = 0


def parse_prompt(text: str) -> list[tuple[str, float]]:
    """Prompt text as (text, weight) segments, by A1111's emphasis rules; ("BREAK", -1.0) ends a chunk."""
    return prompt_syntax.emphasis(text)


def encode(clip: TextEncoder, text: str, check_interrupt: Callable[[], None] | None = None) -> list[Cond]:
    """CONDITIONING for one prompt: one Cond, or one per text its prompt editing can select.
    `check_interrupt` is called before each weighted segment is tokenized and before each 77-token
    window is encoded (it raises to stop)."""
    activation = memory_manager.text_activation_bytes(clip.encoders)
    # on the device for the whole prompt; the LoRA weights only while it encodes (added once there)
    with memory_manager.using(clip.encoders, activation), lora.applied(clip):
        texts = prompt_syntax.variants(text)
        if len(texts) == 1:
            return encode_segments(clip, parse_prompt(texts[0]), check_interrupt)
        conds = []
        for variant in texts:
            cond = encode_segments(clip, parse_prompt(variant), check_interrupt)[0]
            cond.extra[prompt_syntax.SCHEDULE_KEY] = (text, variant)
            conds.append(cond)
        return conds


def encode_segments(clip: TextEncoder, segments: list[tuple[str, float]],
                    check_interrupt: Callable[[], None] | None = None) -> list[Cond]:
    """CONDITIONING for weighted prompt segments: embeds [1, 77 * chunks, D], plus pooled for SDXL."""
    with memory_manager.using(clip.encoders, memory_manager.text_activation_bytes(clip.encoders)) as device:
        return _encode_segments(clip, segments, check_interrupt, device)


def _encode_segments(clip: TextEncoder, segments, check_interrupt, device) -> list[Cond]:
    features, pooled = [], None
    for index, (tokenizer, encoder) in enumerate(zip(clip.tokenizers, clip.encoders)):
        key, width = embeddings.encoder_key(clip.family, index), encoder.get_input_embeddings().embedding_dim
        windows = []
        for window in _token_windows(tokenizer, segments, key, width, check_interrupt):
            if check_interrupt is not None:  # a long prompt is many windows: stop between them
                check_interrupt()
            windows.append(_encode_window(encoder, window.ids, window.weights, clip, window.vectors, device))
        features.append(torch.cat([hidden for hidden, _ in windows], dim=1))
        pooled = windows[0][1]  # SDXL pools from its last encoder (CLIP-G), first window, as ComfyUI
    if len({f.shape[1] for f in features}) != 1:
        raise ValueError("the text encoders tokenized the prompt into different lengths")
    return [Cond(torch.cat(features, dim=-1), pooled=pooled if clip.family.is_xl else None)]


class TokenWindow(NamedTuple):
    ids: list[int]
    weights: list[float]
    vectors: dict[int, torch.Tensor]  # position -> embedding vector that replaces that token's embedding


def _token_windows(tokenizer, segments: list[tuple[str, float]], encoder_key: str = "clip_l",
                   width: int | None = None, check_interrupt: Callable[[], None] | None = None) -> list[TokenWindow]:
    """Tokens in 77-token windows: start, up to 75 prompt tokens, end, padding. As A1111:
    * `embedding:NAME` takes one position per vector of that embedding (its `encoder_key` set); one
      that would straddle two chunks moves whole to the next (only one longer than a chunk is split).
    * the segment ("BREAK", -1.0) ends the current chunk, padded, and starts the next.
    """
    chunks: list[list[tuple[int, float, torch.Tensor | None]]] = []
    chunk: list[tuple[int, float, torch.Tensor | None]] = []
    for text, weight in segments:
        if check_interrupt is not None:  # a hostile prompt can be 100,000s of segments, each tokenized
            check_interrupt()
        if (text, weight) == prompt_syntax.BREAK:
            chunks.append(chunk)
            chunk = []
            continue
        for piece in embeddings.split_text(text):
            if isinstance(piece, str):
                ids = tokenizer(piece, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
                group = [(token, weight, None) for token in ids]
            else:
                group = [(_EMBEDDING_PLACEHOLDER, weight, v) for v in piece.vectors_for(encoder_key, width)]
                if len(chunk) + len(group) > CHUNK >= len(group):
                    chunks.append(chunk)
                    chunk = []
            for token in group:
                if len(chunk) == CHUNK:  # a full chunk closes when the next token comes (then BREAK adds none)
                    chunks.append(chunk)
                    chunk = []
                chunk.append(token)
    if chunk or not chunks:
        chunks.append(chunk)
    windows = []
    for chunk in chunks:
        padding = CHUNK - len(chunk)
        framed = [tokenizer.bos_token_id, *(t for t, _, _ in chunk), tokenizer.eos_token_id]
        windows.append(TokenWindow(framed + [tokenizer.pad_token_id] * padding,
                                   [1.0, *(w for _, w, _ in chunk), 1.0] + [1.0] * padding,
                                   {i + 1: v for i, (_, _, v) in enumerate(chunk) if v is not None}))
    return windows


def _encode_window(encoder, ids: list[int], weights: list[float], clip: TextEncoder,
                   vectors: dict[int, torch.Tensor] | None = None, device=None):
    """(hidden state [1, 77, D], pooled projection [1, P] or None) of one token window."""
    layer = clip.stop_at_clip_layer
    depth = encoder.config.num_hidden_layers
    if not -depth <= layer <= -1:
        raise ValueError(f"stop_at_clip_layer {layer} is outside this text encoder's {depth} layers")
    with torch.no_grad(), _token_embeddings_replaced(encoder, vectors or {}):
        out = encoder(torch.tensor([ids], device=device or encoder.device), output_hidden_states=True)
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


@contextlib.contextmanager
def _token_embeddings_replaced(encoder, vectors: dict[int, torch.Tensor]):
    """While the encoder runs, the token embeddings at these positions are these vectors (textual
    inversion). A hook on the encoder's own embedding layer: position embeddings, attention and the
    pooled output (taken at the end token, found by its id) then work as for any other token."""
    if not vectors:
        yield
        return
    positions = list(vectors)
    stacked = torch.stack(list(vectors.values()))

    def replace(module, args, output):
        output = output.clone()
        output[:, positions] = stacked.to(output.device, output.dtype)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def _apply_weights(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """A1111's emphasis: scale each token's features by its weight, then restore the overall mean."""
    mean = hidden.mean()
    weighted = hidden * torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)[None, :, None]
    new_mean = weighted.mean()
    # A layer-normed output with no bias averages ~0 (rounding noise): the ratio of two such means is
    # noise, or inf, so the features are left as weighted.
    negligible = 1e-4 * weighted.abs().mean()
    if mean.abs() <= negligible or new_mean.abs() <= negligible:
        return weighted
    return weighted * (mean / new_mean)
