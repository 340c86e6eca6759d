"""The training set: world images, depth maps and captions, generated once and kept as .npy files.

`<out>/world/` holds images.npy (uint8 [N,128,128,3]), depths.npy (float16 [N,128,128], 1 = near),
captions.json (CAPTIONS per image) and tokens.npy (their CLIP token ids, int32 [N,CAPTIONS,77]);
meta.json is written last and says what was generated. The arrays are memory-mapped when read.
Each image gets several captions, so the text encoder sees varied phrasings of one scene; one of
them is the canonical prompt_for(scene), the phrasing of evaluation prompts.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..nodes.runtime.tokenizers import MAX_LENGTH, clip_tokenizer
from . import world
from .train_common import Settings

CAPTIONS = 4  # captions per image: the batch's own, prompt_for, and two more phrasings
CHUNK = 4096  # images generated per world.batch call


@dataclass
class WorldData:
    images: np.ndarray
    depths: np.ndarray
    tokens: np.ndarray
    captions: list[list[str]]

    def __len__(self) -> int:
        return len(self.images)


def tokenize(texts: list[str]) -> np.ndarray:
    """CLIP token ids [len(texts), 77] laid out as text_encode.encode lays out a short prompt: start
    token, the prompt, end token, padding."""
    ids = clip_tokenizer()(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]
    return np.asarray(ids, dtype=np.int32)


EMPTY_PROMPT = ""  # the unconditional prompt, for classifier-free guidance


@functools.lru_cache(maxsize=1)
def _empty_tokens() -> np.ndarray:
    return tokenize([EMPTY_PROMPT])[0]


def embed(encoder, tokens: torch.Tensor) -> torch.Tensor:
    """Text embeddings [B,77,D] as text_encode.encode computes them for SD1: the last layer's hidden
    state through the final layer norm, which is CLIPTextModel's last_hidden_state."""
    return encoder(tokens.long()).last_hidden_state


def world_data(settings: Settings) -> WorldData:
    folder = Path(settings.out) / "world"
    meta = {"images": settings.images, "seed": settings.seed, "captions": CAPTIONS}
    meta_file = folder / "meta.json"
    if not meta_file.is_file() or json.loads(meta_file.read_text()) != meta:
        _generate(folder, settings.images, settings.seed)
        meta_file.write_text(json.dumps(meta))
    return WorldData(np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "depths.npy", mmap_mode="r"),
                     np.load(folder / "tokens.npy"), json.loads((folder / "captions.json").read_text()))


def _generate(folder: Path, n: int, seed: int) -> None:
    print(f"[data] generating {n} world images into {folder}", flush=True)
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (n, 128, 128, 3))
    depths = np.lib.format.open_memmap(folder / "depths.npy", "w+", np.float16, (n, 128, 128))
    rng = np.random.default_rng([seed, 1])  # extra phrasings
    captions: list[list[str]] = []
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        chunk_images, chunk_depths, chunk_captions, scenes = world.batch(count, seed=seed * 1_000_003 + start)
        images[start:start + count] = chunk_images
        depths[start:start + count] = chunk_depths
        for text, scene in zip(chunk_captions, scenes):
            captions.append([text, world.prompt_for(scene)]
                            + [world.caption(scene, rng) for _ in range(CAPTIONS - 2)])
    images.flush()
    depths.flush()
    tokens = tokenize([text for per_image in captions for text in per_image]).reshape(n, CAPTIONS, MAX_LENGTH)
    np.save(folder / "tokens.npy", tokens)
    (folder / "captions.json").write_text(json.dumps(captions))
    print(f"[data] done in {time.monotonic() - started:.0f} s", flush=True)


def pick_tokens(data: WorldData, index: np.ndarray, rng: np.random.Generator, drop: float) -> torch.Tensor:
    """One random caption of each example; a `drop` share of them replaced by the empty prompt."""
    choice = rng.integers(CAPTIONS, size=len(index))
    tokens = data.tokens[index, choice].copy()
    tokens[rng.random(len(index)) < drop] = _empty_tokens()
    return torch.from_numpy(tokens)


def two_objects_one_in_a_corner(data: WorldData) -> np.ndarray:
    """Indices of the scenes with two objects, at least one of them in a corner, read off each image's
    canonical caption (prompt_for: one shape word per object, "corner" only in corner positions)."""
    def wanted(canonical: str) -> bool:
        words = canonical.split()
        return sum(words.count(shape) for shape in world.SHAPES) == 2 and "corner" in words
    return np.array([i for i, per_image in enumerate(data.captions) if wanted(per_image[1])], dtype=np.int64)


def object_cover(data: WorldData, size: int, chunk: int = 1024) -> torch.Tensor:
    """Share of each cell of a size x size grid covered by objects (true depth above background):
    float32 [N,1,size,size]."""
    out = torch.empty(len(data), 1, size, size)
    for start in range(0, len(data), chunk):
        objects = torch.from_numpy(np.asarray(data.depths[start:start + chunk]) > 0)[:, None].float()
        out[start:start + chunk] = torch.nn.functional.adaptive_avg_pool2d(objects, size)
    return out


def images_tensor(data: WorldData, index: np.ndarray) -> torch.Tensor:
    """Images as the VAE takes them: [B,3,H,W] in -1..1."""
    pixels = torch.from_numpy(np.ascontiguousarray(data.images[index]))
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
