"""TAESD / TAESDXL: tiny decoders that turn a latent into an approximate image fast, for live previews.

The files are looked for in the `vae_approx` model folders under ComfyUI's names: the first file whose
name starts with `taesd_decoder` (SD1/SD2) or `taesdxl_decoder` (SDXL), as ComfyUI picks it, or a
diffusers AutoencoderTiny folder named `taesd` / `taesdxl` (madebyollin's Hugging Face repos). The
network is diffusers' AutoencoderTiny. ComfyUI's decoder files hold madebyollin's layout, an
nn.Sequential whose index 0 is a parameterless clamp (`1.weight`, `3.conv.0.weight`, ...), which is
AutoencoderTiny's `decoder.layers` shifted by one; a file in AutoencoderTiny's own layout
(`decoder.layers.0.weight`, ...) is read as it is. The layer sizes are read from the weights, so any
decoder of that shape loads.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import torch
from diffusers import AutoencoderTiny

from .. import folders
from .model_types import Family
from .state_dict_files import CheckpointError, open_state_dict

DECODER_PREFIXES = {False: "taesd_decoder", True: "taesdxl_decoder"}  # by family.is_xl
DIFFUSERS_FOLDERS = {False: "taesd", True: "taesdxl"}
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")

_MADEBYOLLIN_KEY = re.compile(r"^(\d+)\.(.+)$")
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)$")


def expected_name(family: Family) -> str:
    """What a user should put in models/vae_approx/ for this family (for messages)."""
    return DECODER_PREFIXES[family.is_xl]


# find_decoder's last answer per family kind: (the folders' modification times, the path found)
_found: dict[bool, tuple[tuple, Path | None]] = {}
_found_lock = threading.Lock()
RECENT_NS = 2 * 10 ** 9  # a folder changed this recently may change again within its timestamp's resolution


def find_decoder(family: Family) -> Path | None:
    """The TAESD decoder file or folder for a family in the vae_approx folders, or None. Called at every
    sampling step for previews, so the answer is kept until a vae_approx folder (or its taesd folder)
    is modified: a decoder added during a job is used from the next step on."""
    where = folders.current()
    prefix, folder = DECODER_PREFIXES[family.is_xl], DIFFUSERS_FOLDERS[family.is_xl]
    signature = tuple((str(root), _modified(root), _modified(root / folder)) for root in where.model_dirs("vae_approx"))
    with _found_lock:
        cached = _found.get(family.is_xl)
    if cached is not None and cached[0] == signature:
        return cached[1]
    found = next((where.find("vae_approx", name) for name in where.list("vae_approx")
                  if name.startswith(prefix) or name == folder), None)
    newest = max((when for _, *whens in signature for when in whens if when is not None), default=0)
    if time.time_ns() - newest > RECENT_NS:
        with _found_lock:
            _found[family.is_xl] = (signature, found)
    return found


def _modified(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def load_decoder(path: str | Path) -> AutoencoderTiny:
    """An AutoencoderTiny in eval mode holding the decoder weights at `path`; CheckpointError when the
    file is not a TAESD decoder."""
    path = Path(path)
    if path.is_dir():
        weights = next((path / name for name in DIFFUSERS_WEIGHTS if (path / name).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path}: no {DIFFUSERS_WEIGHTS[0]} in this AutoencoderTiny folder")
        state = open_state_dict(weights)
    else:
        state = open_state_dict(path)
    decoder_state = _decoder_state(state, path)
    model = AutoencoderTiny(**_decoder_config(decoder_state, path))
    try:
        model.decoder.load_state_dict(decoder_state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: not a TAESD decoder ({str(err).splitlines()[0]})") from err
    return model.eval().requires_grad_(False)


def _decoder_state(state, path: Path) -> dict[str, torch.Tensor]:
    """The decoder's weights named as AutoencoderTiny's `decoder` names them."""
    if any(key.startswith("decoder.layers.") for key in state):  # AutoencoderTiny's own layout
        return {key[len("decoder."):]: state[key] for key in state if key.startswith("decoder.")}
    renamed = {}
    for key in state:
        match = _MADEBYOLLIN_KEY.match(key)
        if match is None or int(match[1]) == 0:
            raise CheckpointError(f"{path}: unexpected key {key!r} for a TAESD decoder")
        renamed[f"layers.{int(match[1]) - 1}.{match[2]}"] = state[key]
    return renamed


def _decoder_config(decoder_state: dict[str, torch.Tensor], path: Path) -> dict:
    """AutoencoderTiny's arguments for these decoder weights: after conv_in and its activation, each
    stage is some blocks (`layers.i.conv.0.weight`) closed by a plain conv (`layers.i.weight`)."""
    conv_in = decoder_state.get("layers.0.weight")
    if conv_in is None or conv_in.ndim != 4:
        raise CheckpointError(f"{path}: no first convolution, not a TAESD decoder")
    layers: dict[int, set[str]] = {}
    for key in decoder_state:
        match = _LAYER_KEY.match(key)
        if match is None:
            raise CheckpointError(f"{path}: unexpected key {key!r} for a TAESD decoder")
        layers.setdefault(int(match[1]), set()).add(match[2])
    channels, blocks, count = [], [], 0
    for index in sorted(i for i in layers if i > 0):
        names = layers[index]
        if "conv.0.weight" in names:
            count += 1
            width = int(decoder_state[f"layers.{index}.conv.0.weight"].shape[0])
        elif names == {"weight"} or names == {"weight", "bias"}:
            if not count:
                raise CheckpointError(f"{path}: a TAESD decoder stage without blocks at layer {index}")
            channels.append(width)
            blocks.append(count)
            count = 0
        else:
            raise CheckpointError(f"{path}: unexpected layer {index} ({sorted(names)}) for a TAESD decoder")
    if not channels or count:
        raise CheckpointError(f"{path}: incomplete TAESD decoder")
    # The encoder is never used for previews; the smallest one keeps the model light.
    return {"latent_channels": int(conv_in.shape[1]), "decoder_block_out_channels": tuple(channels),
            "num_decoder_blocks": tuple(blocks), "encoder_block_out_channels": (1,), "num_encoder_blocks": (1,)}

