"""Previews while sampling, by the job's preview method (ComfyUI's names):

- "latent2rgb": a fixed linear map from the 4 latent channels to RGB, one pixel per latent pixel. The
  factors are ComfyUI's `latent_rgb_factors` (comfy/latent_formats.py), fitted on the UNet-space
  latents (VAE latents times the scaling factor) that the sampler works on.
- "taesd": the family's TAESD decoder from models/vae_approx/ (runtime/taesd.py), a full-size
  approximate image; latent2rgb when there is none or it cannot be read (warned once per job).
- "auto": TAESD when the family's decoder file is there, latent2rgb otherwise (quietly).
- "none": no previews (`preview_image` returns None).

The sampler calls `preview_image(latent, family)`; whoever runs a job chooses the method around it with
`previewing(method)` (a context variable, so the sampler needs no argument for it). Outside any
`previewing` block the method is "auto".
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from . import taesd
from .model_types import Family

_SD_FACTORS = [[0.3512, 0.2297, 0.3227],
               [0.3250, 0.4974, 0.2350],
               [-0.2829, 0.1762, 0.2721],
               [-0.2120, -0.2616, -0.7177]]
_SD_BIAS = [0.0, 0.0, 0.0]
_XL_FACTORS = [[0.3651, 0.4232, 0.4341],
               [-0.2533, -0.0042, 0.1068],
               [0.1076, 0.1111, -0.0362],
               [-0.3165, -0.2492, -0.2188]]
_XL_BIAS = [0.1084, -0.0175, -0.0011]

MAX_SIZE = 512  # longest side of a preview, in pixels (ComfyUI's --preview-size default)
NONE, AUTO, LATENT2RGB, TAESD = "none", "auto", "latent2rgb", "taesd"

log = logging.getLogger(__name__)


@dataclass
class _Scope:
    method: str
    warned: set = field(default_factory=set)  # warnings already given in this scope (a job)


_scope: ContextVar[_Scope | None] = ContextVar("inkwash_preview_method", default=None)
_unscoped = _Scope(AUTO)


@contextmanager
def previewing(method: str) -> Iterator[None]:
    """Within the block (one job), `preview_image` renders with `method`; each warning about a
    missing or unreadable TAESD decoder is logged once."""
    token = _scope.set(_Scope(method))
    try:
        yield
    finally:
        _scope.reset(token)


def preview_image(latent: torch.Tensor, family: Family) -> Image.Image | None:
    """One latent [4,h,w] (or [1,4,h,w]) as a small RGB image by the current method; None for "none"."""
    scope = _scope.get() or _unscoped
    if scope.method == NONE:
        return None
    if scope.method in (AUTO, TAESD):
        decoder = _decoder(family, scope)
        if decoder is not None:
            try:
                return taesd_image(decoder, latent)
            except RuntimeError as err:  # a decoder for other latents, out of memory: never fail the job
                _warn_once(scope, f"TAESD preview failed ({str(err).splitlines()[0]}); previews use latent2rgb")
    return latent2rgb_image(latent, family)


def latent2rgb_image(latent: torch.Tensor, family: Family) -> Image.Image:
    """One latent [4,h,w] (or [1,4,h,w]) as a small RGB image, one pixel per latent pixel."""
    latent = latent.reshape(latent.shape[-3:]).detach().float().cpu()
    factors, bias = (_XL_FACTORS, _XL_BIAS) if family.is_xl else (_SD_FACTORS, _SD_BIAS)
    rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(factors)) + torch.tensor(bias)
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels)
    image.thumbnail((MAX_SIZE, MAX_SIZE))
    return image


def taesd_image(decoder, latent: torch.Tensor) -> Image.Image:
    """One latent through a TAESD decoder (AutoencoderTiny), mapped to pixels as ComfyUI maps it:
    the decoder's [-1, 1] output clamped, then (x + 1) * 127.5 rounded; at most MAX_SIZE a side."""
    x = latent.reshape(1, *latent.shape[-3:]).detach()
    with _decoders_lock:  # one decoder may serve two jobs' threads; moving it is not thread-safe
        decoder.to(x.device)
        with torch.no_grad():
            sample = decoder.decode(x.float()).sample[0]
    pixels = sample.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(pixels)
    image.thumbnail((MAX_SIZE, MAX_SIZE))
    return image


# Loaded decoders by file: (size, mtime) of the version read, and the decoder or why it failed.
_decoders: dict[Path, tuple[tuple, object]] = {}
_decoders_lock = threading.RLock()


def _decoder(family: Family, scope: _Scope):
    """The family's TAESD decoder, or None (warned once per scope when TAESD was asked for by name,
    or when a decoder file is there but unusable)."""
    path = taesd.find_decoder(family)
    if path is None:
        if scope.method == TAESD:
            _warn_once(scope, f"TAESD previews asked for, but there is no models/vae_approx/"
                              f"{taesd.expected_name(family)}; previews use latent2rgb")
        return None
    stat = path.stat()
    signature = (stat.st_size, stat.st_mtime_ns)
    with _decoders_lock:
        cached = _decoders.get(path)
        if cached is None or cached[0] != signature:
            try:
                loaded = taesd.load_decoder(path)
            except Exception as err:  # any unreadable file: previews must never fail the job
                loaded = f"{type(err).__name__}: {err}"
            _decoders[path] = cached = (signature, loaded)
    if isinstance(cached[1], str):
        _warn_once(scope, f"TAESD decoder {path} could not be loaded ({cached[1]}); previews use latent2rgb")
        return None
    return cached[1]


def _warn_once(scope: _Scope, message: str) -> None:
    if message not in scope.warned:
        scope.warned.add(message)
        log.warning(message)
