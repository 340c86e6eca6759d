"""ControlNet preprocessors ("annotators") from controlnet_aux, run offline on IMAGE tensors.

controlnet_aux is imported on first use: importing it loads every detector it ships (seconds, and
a page of warnings). Weights come only from the annotators model folders, never from a hub.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np
import torch

from .. import folders
from . import demo_depth, memory_manager
from .state_dict_files import CheckpointError, load_pickled

MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"
# Where people put the file: the folder itself, or the layout comfyui_controlnet_aux downloads into.
MIDAS_CANDIDATES = (MIDAS_FILE, f"lllyasviel/Annotators/{MIDAS_FILE}")


class AnnotatorWeightsMissing(FileNotFoundError):
    """An annotator's weights file is in none of the annotators folders."""


class DepthEstimator(Protocol):
    def __call__(self, image: np.ndarray, resolution: int, **options) -> np.ndarray:
        """uint8 RGB [H,W,3] in; uint8 depth [h,w] or [h,w,3] out, nearer is brighter."""


def _controlnet_aux():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import controlnet_aux
    return controlnet_aux


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image[..., :3].detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def _to_image(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return torch.from_numpy(array.astype(np.float32) / 255.0)


# -- Canny -----------------------------------------------------------------------------------------------

def canny(images: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Edges of IMAGE [B,H,W,C] as IMAGE [B,H,W,3], white on black. Thresholds are fractions of 255."""
    detector = _controlnet_aux().CannyDetector()
    out = []
    for image in _to_uint8(images):
        height, width = image.shape[:2]
        # controlnet_aux resizes to multiples of 64, which would blur 1-pixel edges; padding up to them
        # with repeated border pixels (no new edges) keeps the input's own pixels and size.
        padded = np.pad(image, ((0, -height % 64), (0, -width % 64), (0, 0)), mode="edge")
        side = min(padded.shape[:2])
        edges = detector(padded, low_threshold=low_threshold * 255.0, high_threshold=high_threshold * 255.0,
                         detect_resolution=side, image_resolution=side, output_type="np")
        out.append(_to_image(edges[:height, :width]))
    return torch.stack(out)


# -- depth -----------------------------------------------------------------------------------------------

def find_annotator(candidates: tuple[str, ...], what: str) -> Path:
    """The first of `candidates` present in an annotators folder, or an error naming what was looked for."""
    dirs = folders.current().model_dirs("annotators")
    for directory in dirs:
        for name in candidates:
            path = folders.named_path(directory, name)  # a symlink the user put there is fine
            if path.is_file():
                return path
    raise AnnotatorWeightsMissing(
        f"{what} weights {candidates[0]!r} not found; looked in {', '.join(str(d) for d in dirs)}. "
        f"Download {candidates[0]} (lllyasviel/Annotators) and put it in one of these folders.")


def _load_midas(path: Path) -> DepthEstimator:
    aux = _controlnet_aux()
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    # Built here rather than by MidasDetector.from_pretrained so the .pt is read with weights_only=True
    # on every torch version, and a missing file can never fall through to a download.
    net = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    state = load_pickled(path)  # weights_only; a pickle with objects is refused, naming the file
    if not isinstance(state, dict):
        raise CheckpointError(f"{path.name}: not a MiDaS state dict")
    net.load_state_dict(state["model"] if "optimizer" in state else state)
    detector = aux.MidasDetector(net.eval())

    def estimate(image: np.ndarray, resolution: int, a: float = np.pi * 2.0, bg_threshold: float = 0.1) -> np.ndarray:
        # in fp32 (MiDaS' BatchNorm isn't fp16-safe); on the device while it runs, its activations
        # roughly a kilobyte per pixel at the detect resolution
        with memory_manager.using(net, activation_bytes=1024 * resolution ** 2):
            return detector(image, a=a, bg_th=bg_threshold, detect_resolution=resolution,
                            image_resolution=resolution, output_type="np")

    return estimate


# Depth estimators by name: (weights file candidates, what to call it in errors, loader).
DEPTH_ESTIMATORS: dict[str, tuple[tuple[str, ...], str, Callable[[Path], DepthEstimator]]] = {
    "midas_dpt_hybrid": (MIDAS_CANDIDATES, "MiDaS DPT-Hybrid depth", _load_midas),
    demo_depth.NAME: ((demo_depth.WEIGHTS,), "Inkwash demo depth", demo_depth.load),
}
# What the depth node uses when not told: real MiDaS when installed, else the bundled small estimator.
DEPTH_PREFERENCE = ("midas_dpt_hybrid", demo_depth.NAME)

_loaded: dict[str, tuple[tuple, DepthEstimator]] = {}
_load_lock = threading.Lock()


def _first_installed(names: tuple[str, ...]) -> tuple[str, Path]:
    missing = []
    for name in names:
        candidates, what, _ = DEPTH_ESTIMATORS[name]
        try:
            return name, find_annotator(candidates, what)
        except AnnotatorWeightsMissing as err:
            missing.append(str(err))
    raise AnnotatorWeightsMissing("no depth estimator is installed: " + " / ".join(missing))


def depth_estimator(name: str | None = None) -> DepthEstimator:
    """A loaded depth estimator (by default the first installed of DEPTH_PREFERENCE), kept while its
    weights file is unchanged."""
    name, path = _first_installed((name,) if name else DEPTH_PREFERENCE)
    loader = DEPTH_ESTIMATORS[name][2]
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _load_lock:
        cached = _loaded.get(name)
        if cached is None or cached[0] != key:
            _loaded.pop(name, None)
            _loaded[name] = (key, loader(path))
        return _loaded[name][1]


def depth_map(images: torch.Tensor, resolution: int, estimator: str | None = None,
              check_interrupt: Callable[[], None] | None = None, **options) -> torch.Tensor:
    """Depth of IMAGE [B,H,W,C] as IMAGE [B,h,w,3] whose shorter side is `resolution`, keeping the aspect
    ratio, as comfyui_controlnet_aux's preprocessors return it. `check_interrupt` before each image."""
    estimate = depth_estimator(estimator)
    out = []
    for image in _to_uint8(images):
        if check_interrupt is not None:
            check_interrupt()
        height, width = image.shape[:2]
        scale = resolution / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        depth = estimate(image, resolution, **options)
        if depth.shape[1::-1] != size:
            depth = cv2.resize(depth, size, interpolation=cv2.INTER_LINEAR)
        out.append(_to_image(depth))
    return torch.stack(out)
