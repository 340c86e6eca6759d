"""Seeded noise, drawn on the CPU so that a seed gives the same image on any device.

Four rules, by the program people bring their seeds from and the device it drew on (a sampler node's
`noise_rule` input):

  "comfyui"   the starting noise of a batch is ONE tensor [B, C, H, W] drawn from a generator seeded with
              the seed (ComfyUI's prepare_noise, honouring a LATENT's batch_index as it does); step noise
              of ancestral samplers comes from a second generator seeded with seed + 1, one draw of the
              whole batch's shape per call (ComfyUI's default_noise_sampler on the CPU); SDE samplers
              read one Brownian tree seeded with the seed.
  "comfyui_nv"  as "comfyui", with the step noise ComfyUI draws on an NVIDIA GPU: its generator on the GPU
              is seeded with the seed itself, and draws the numbers philox.py computes. (ComfyUI's starting
              noise is drawn on the CPU on every device.)
  "a1111"     image i has its own generator seeded with seed + i (A1111's "correct seeds for batches"),
              which draws its starting noise and then, continuing, its step noise; SDE samplers read one
              Brownian tree per image seeded with its seed. An image's result does not depend on its batch.
              The generators are torch's CPU ones: A1111's "CPU" random number source.
  "a1111_nv"  as "a1111", with the numbers an NVIDIA GPU draws (philox.py): A1111's "NV" source, and what
              its default "GPU" source draws on NVIDIA cards.

Under both A1111 rules a seed delta (A1111's "Eta noise seed delta") re-seeds the generators with
seed + i + delta once the starting noise is drawn, so it changes only the step noise, and a LATENT's
"variation" (the VariationSeed node: A1111's variation seed and "resize seed from") changes the starting
noise as A1111's ImageRNG.first does.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from . import philox

NOISE_RULES = ("comfyui", "comfyui_nv", "a1111", "a1111_nv")
COMFYUI_RULES = ("comfyui", "comfyui_nv")  # one batch tensor from the seed, ComfyUI's denoise schedule
A1111_RULES = ("a1111", "a1111_nv")  # a generator per image, A1111's img2img steps and timesteps
_SEED_SPACE = 2 ** 64  # seeds are unsigned 64-bit, as ComfyUI's seed widget

StepNoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed % _SEED_SPACE)


class _CpuDraws:
    """torch's CPU generator behind the same `randn(shape)` as PhiloxGenerator."""

    def __init__(self, seed: int):
        self.generator = _generator(seed)

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32)


_PER_IMAGE_DRAWS = {"a1111": _CpuDraws, "a1111_nv": philox.PhiloxGenerator}


def generators(seed: int, count: int, batch_index: Sequence[int] | None = None, rule: str = "a1111") -> list:
    """Per-image generators of an A1111 rule for `count` images: seed + i, or seed + batch_index[i] for
    images that were cut out of a larger batch (ComfyUI's LATENT "batch_index")."""
    offsets = list(batch_index) if batch_index is not None else list(range(count))
    if len(offsets) != count:
        raise ValueError(f"batch_index has {len(offsets)} entries for a batch of {count}")
    return [_PER_IMAGE_DRAWS[rule]((seed + offset) % _SEED_SPACE) for offset in offsets]


def gaussian(gens: Sequence, shape: Sequence[int], device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise [len(gens), *shape], image i drawn from gens[i] on the CPU."""
    noise = torch.stack([g.randn(shape) for g in gens])
    return noise.to(device=device, dtype=dtype)


def batch_noise(seed: int, shape: Sequence[int], batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """ComfyUI's prepare_noise: one draw of the whole batch; with batch_index, the images of the larger
    batch they were cut from (every image up to the highest index is drawn, in order)."""
    generator = _generator(seed)
    if batch_index is None:
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    if len(batch_index) != shape[0]:
        raise ValueError(f"batch_index has {len(batch_index)} entries for a batch of {shape[0]}")
    unique, inverse = np.unique(np.asarray(batch_index), return_inverse=True)
    drawn = [torch.randn((1, *shape[1:]), generator=generator, dtype=torch.float32) for _ in range(int(unique[-1]) + 1)]
    kept = [drawn[int(i)] for i in unique]
    return torch.cat([kept[int(i)] for i in np.ravel(inverse)])


def _varied_start(rule: str, seed: int, generator, shape: tuple, variation: Mapping) -> torch.Tensor:
    """One image's starting noise [C, H, W] under A1111's variation seed and seed resize (ImageRNG.first):
    drawn at the `resize_from` size (pixels, w x h) when given, slerped towards the subseed's noise by
    `strength`, then pasted centred into noise of the image's size from the image's own generator."""
    fresh = _PER_IMAGE_DRAWS[rule]  # A1111 re-seeds its global generator for these draws
    resize = variation.get("resize_from")
    noise_shape = (shape[0], resize[1] // 8, resize[0] // 8) if resize else shape
    strength = float(variation.get("strength") or 0.0)
    subnoise = fresh(int(variation.get("subseed") or 0) % _SEED_SPACE).randn(noise_shape) if strength else None
    noise = fresh(seed).randn(noise_shape) if noise_shape != shape else generator.randn(shape)
    if subnoise is not None:
        noise = _a1111_slerp(strength, noise, subnoise)
    if noise_shape == shape:
        return noise
    full = generator.randn(shape)
    dx, dy = (shape[2] - noise_shape[2]) // 2, (shape[1] - noise_shape[1]) // 2
    w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
    h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
    tx, ty, sx, sy = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
    full[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
    return full


def _a1111_slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's slerp of two [C, H, W] noises, as it computes it: normalised along dim 1, and (near
    parallel) its linear blend with the weights the other way round."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class SeededNoise:
    """The starting noise of a sampling run and the source of its step noise, under one rule."""

    def __init__(self, rule: str, seed: int, shape: Sequence[int], batch_index: Sequence[int] | None = None,
                 seed_delta: int = 0, variation: Mapping | None = None):
        if rule not in NOISE_RULES:
            raise ValueError(f"unknown noise_rule {rule!r}; known: {', '.join(NOISE_RULES)}")
        self.rule, self.seed, self.shape = rule, seed, tuple(shape)
        self.batch_index = list(batch_index) if batch_index is not None else None
        if rule in COMFYUI_RULES:
            if variation:
                raise ValueError("a variation seed is A1111's: sample it with noise_rule a1111 or a1111_nv")
            self.initial = batch_noise(seed, shape, self.batch_index)
        else:
            self._gens = generators(seed, shape[0], self.batch_index, rule)
            if variation:
                self.initial = torch.stack([_varied_start(rule, image_seed, gen, self.shape[1:], variation)
                                            for image_seed, gen in zip(self._seeds(), self._gens)])
            else:
                self.initial = gaussian(self._gens, shape[1:])
            if seed_delta:  # A1111's eta noise seed delta: the step noise from other seeds
                self._gens = generators(seed + seed_delta, shape[0], self.batch_index, rule)

    def _seeds(self) -> list[int]:
        offsets = self.batch_index if self.batch_index is not None else range(self.shape[0])
        return [(self.seed + o) % _SEED_SPACE for o in offsets]

    def step_noise(self, kind: str, sigmas: torch.Tensor, device) -> StepNoise | None:
        """noise(sigma, sigma_next) for a sampler that adds noise of `kind` ("randn", "brownian" or
        "brownian_gpu")."""
        if kind == "none":
            return None
        if kind.startswith("brownian"):
            positive = sigmas[sigmas > 0]
            sigma_min, sigma_max = float(positive.min()), float(sigmas.max())
            # a tree built on an NVIDIA GPU: A1111's on a GPU, ComfyUI's for its *_gpu samplers
            on_gpu = self.rule == "a1111_nv" or (self.rule == "comfyui_nv" and kind == "brownian_gpu")
            if self.rule in COMFYUI_RULES:
                trees = _BrownianTrees(self.shape, sigma_min, sigma_max, [self.seed % _SEED_SPACE], False, on_gpu)
            else:
                trees = _BrownianTrees(self.shape, sigma_min, sigma_max, self._seeds(), True, on_gpu)
            return lambda sigma, sigma_next: trees(sigma, sigma_next).to(device)
        if self.rule == "comfyui":
            generator = _generator(self.seed + 1)  # ComfyUI's default_noise_sampler draws from seed + 1 on the CPU
            return lambda sigma, sigma_next: torch.randn(self.shape, generator=generator).to(device)
        if self.rule == "comfyui_nv":
            gpu = philox.PhiloxGenerator(self.seed)  # ... and from the seed itself on a GPU
            return lambda sigma, sigma_next: gpu.randn(self.shape).to(device)
        gens = self._gens
        return lambda sigma, sigma_next: gaussian(gens, self.shape[1:], device)


class _BrownianTrees:
    """Brownian motion over [sigma_min, sigma_max] from torchsde's BrownianTree, so an SDE sampler's noise
    depends on the noise levels it steps between, not on how many steps it takes. The increment between
    two sigmas is scaled to unit variance (ComfyUI's and k-diffusion's BrownianTreeNoiseSampler). With
    `nvidia_numbers`, the tree's Gaussian draws are the ones it would make on an NVIDIA GPU."""

    def __init__(self, shape, sigma_min: float, sigma_max: float, seeds: list[int], batched: bool,
                 nvidia_numbers: bool = False):
        import torchsde  # only the SDE samplers need it

        self.batched, self.nvidia_numbers = batched, nvidia_numbers
        t0, t1 = torch.tensor(sigma_min), torch.tensor(sigma_max)
        w0 = torch.zeros(shape[1:] if batched else shape)
        with _tree_draws(nvidia_numbers):  # the tree draws its end point as it is made
            self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=seed) for seed in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma).float().cpu(), torch.as_tensor(sigma_next).float().cpu()
        sign = 1
        if t0 > t1:
            t0, t1, sign = t1, t0, -1
        with warnings.catch_warnings():  # float32 end points read back as doubles are "past" the tree's ends
            warnings.filterwarnings("ignore", message="Should have t[ab]")
            with _tree_draws(self.nvidia_numbers):
                w = torch.stack([tree(t0, t1) for tree in self.trees]) * sign
        w = w if self.batched else w[0]
        return w / (t1 - t0).abs().sqrt()


# torchsde draws every point of a Brownian tree with a fresh generator seeded from the tree's entropy, on the
# tree's device (brownian_interval._randn). On an NVIDIA GPU such a draw is the Philox numbers of that
# seed; while _tree_draws(True) is active in a thread, that thread's tree draws are made so, on the CPU.
_draws = threading.local()


@contextlib.contextmanager
def _tree_draws(nvidia_numbers: bool):
    if nvidia_numbers:
        _route_tree_draws()
    before = getattr(_draws, "nvidia", False)
    _draws.nvidia = nvidia_numbers
    try:
        yield
    finally:
        _draws.nvidia = before


def _route_tree_draws() -> None:
    from torchsde._brownian import brownian_interval

    original = getattr(brownian_interval, "_randn", None)
    if original is None:
        raise RuntimeError("this torchsde has no brownian_interval._randn: the NVIDIA Brownian trees of the "
                           "comfyui_nv and a1111_nv noise rules can't be drawn with it")
    if getattr(original, "routed", False):
        return

    def _randn(size, dtype, device, seed):
        if getattr(_draws, "nvidia", False):
            return philox.PhiloxGenerator(int(seed)).randn(size).to(device=device, dtype=dtype)
        return original(size, dtype, device, seed)

    _randn.routed = True
    brownian_interval._randn = _randn
