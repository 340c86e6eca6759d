"""torch.randn as an NVIDIA GPU draws it, computed on the CPU.

A CUDA generator seeded with s draws its k-th tensor of n standard normal values as: value i is the
first Box-Muller output of Philox4x32-10 with key s (low, high 32 bits) and counter (k, 0, i, 0). That
holds while one pass of torch's normal kernel covers the tensor, which it does for every latent on
current cards. A1111's "NV" random number source is this rule, and its default "GPU" source draws the
same numbers on NVIDIA cards; drawing them here reproduces such images on any device.

Philox: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011). Box-Muller as cuRAND's
curand_normal4, in float32.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_POW_MINUS_32 = np.float32(2.0 ** -32)
_TWO_PI = np.float32(2.0 * np.pi)
_CHUNK = 1 << 18  # values drawn at once: about 50 MB of working arrays


def philox4x32(counter: np.ndarray, key: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Philox4x32: `counter` [4, n] and `key` [2, n] 32-bit words -> [4, n] random 32-bit words."""
    c0, c1, c2, c3 = (np.asarray(word, dtype=np.uint64) for word in counter)
    k0, k1 = (np.asarray(word, dtype=np.uint64) for word in key)
    m0, m1 = np.uint64(_MULTIPLIERS[0]), np.uint64(_MULTIPLIERS[1])
    for round_index in range(rounds):
        if round_index:
            k0 = (k0 + np.uint64(_KEY_STEPS[0])) & _LOW32
            k1 = (k1 + np.uint64(_KEY_STEPS[1])) & _LOW32
        product0, product1 = c0 * m0, c2 * m1  # 32 x 32 -> 64 bits: no overflow in uint64
        c0, c1, c2, c3 = ((product1 >> np.uint64(32)) ^ c1 ^ k0, product1 & _LOW32,
                          (product0 >> np.uint64(32)) ^ c3 ^ k1, product0 & _LOW32)
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def _box_muller_first(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cuRAND's Box-Muller in float32: the first of the two normals made from words x and y."""
    u = x.astype(np.float32) * _TWO_POW_MINUS_32 + _TWO_POW_MINUS_32 / np.float32(2)
    v = y.astype(np.float32) * (_TWO_POW_MINUS_32 * _TWO_PI) + (_TWO_POW_MINUS_32 * _TWO_PI) / np.float32(2)
    return (np.sqrt(np.float32(-2.0) * np.log(u)) * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """A CUDA torch.Generator's standard normal draws, on the CPU: `randn` continues where the last
    call left off, as each torch.randn call on the GPU does."""

    def __init__(self, seed: int):
        self.seed = int(seed) % 2 ** 64
        self.calls = 0

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        count = int(np.prod(shape, dtype=np.int64))
        if count >= 2 ** 32:
            raise ValueError(f"a draw of {count} values is more than one Philox stream holds")
        values = np.empty(count, dtype=np.float32)
        for start in range(0, count, _CHUNK):  # in pieces, so a big draw needs little memory at once
            size = min(_CHUNK, count - start)
            counter = np.zeros((4, size), dtype=np.uint64)
            counter[0] = self.calls
            counter[2] = np.arange(start, start + size, dtype=np.uint64)
            key = np.array([[self.seed & 0xFFFFFFFF], [self.seed >> 32]], dtype=np.uint64).repeat(size, axis=1)
            words = philox4x32(counter, key)
            values[start:start + size] = _box_muller_first(words[0], words[1])
        self.calls += 1
        return torch.from_numpy(values.reshape(tuple(shape)))
