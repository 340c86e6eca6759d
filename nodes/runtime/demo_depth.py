"""The bundled depth estimator: a small UNet from RGB to depth, trained on the demo world's true depth
(demo/train_depth.py). It stands in for MiDaS (470 MB) when MiDaS' weights are not installed; its
weights file, inkwash-demo-depth.safetensors, sits in an annotators folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn


NAME = "inkwash_demo_depth"
WEIGHTS = "inkwash-demo-depth.safetensors"
WIDTHS = (16, 32, 64, 96)  # one level per width, each half the resolution of the one before
TRAINED_SIZE = 128  # images are resized so their shorter side is this, as in training


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.GroupNorm(4, outputs), nn.SiLU(),
                         nn.Conv2d(outputs, outputs, 3, padding=1), nn.GroupNorm(4, outputs), nn.SiLU())


class DepthNet(nn.Module):
    """RGB [B,3,H,W] in 0..1 -> depth [B,1,H,W] in 0..1, 1 = near. H and W multiples of 8."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        self.widths = tuple(widths)
        self.down = nn.ModuleList(_block(a, b) for a, b in zip((3, *widths[:-1]), widths))
        self.up = nn.ModuleList(_block(deep + skip, skip) for deep, skip in zip(widths[:0:-1], widths[-2::-1]))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        skips, x = [], rgb * 2 - 1
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return torch.sigmoid(self.head(x))


def save(net: DepthNet, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
    save_file(weights, path, metadata={"inkwash.depth.widths": json.dumps(net.widths)})
    return path


def load_net(path: str | Path) -> DepthNet:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        widths = json.loads((f.metadata() or {}).get("inkwash.depth.widths", json.dumps(WIDTHS)))
    net = DepthNet(widths)
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return net.eval()


def load(path: Path):
    """The estimator as annotators.depth_map calls it: uint8 RGB in, uint8 depth (nearer brighter) out."""
    net = load_net(path)

    def estimate(image: np.ndarray, resolution: int, **options) -> np.ndarray:
        height, width = image.shape[:2]
        scale = TRAINED_SIZE / min(height, width)
        size = (max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8))
        pixels = np.array(Image.fromarray(np.asarray(image[..., :3], np.uint8)).resize(size, Image.BILINEAR))
        with torch.no_grad():
            depth = net(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0)[0, 0]
        return (depth.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    return estimate
