"""Stage 5: the depth estimator (nodes/runtime/demo_depth.py), on the world's true depth maps.

Its result goes straight to `<models>/annotators/`, where the depth preprocessor finds it. The
done marker records its correlation with the truth on freshly generated images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from ..nodes.runtime.demo_depth import WEIGHTS, DepthNet, save
from .train_common import Plan, Settings, StageDir, Trainer, save_grid
from .train_data import world_data

NAME = "depth"
PLAN = Plan(budget_minutes=8, batch=16, lr=1e-3, warmup=100)
SHOWN = 8
VALIDATION_SEED = 12345  # images the estimator never trained on


def weights_file(settings: Settings) -> Path:
    return Path(settings.models) / "annotators" / WEIGHTS


def _batch(images: np.ndarray, depths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return rgb, torch.from_numpy(np.asarray(depths, dtype=np.float32))[:, None]


def run(settings: Settings) -> bool:
    stage = StageDir(settings, NAME)
    data = world_data(settings)
    torch.manual_seed(settings.seed + 5)
    net = DepthNet()
    trainer = Trainer(stage, settings, PLAN, {"depth": net}, seed=5)
    images, depths, _, _ = world.batch(64, seed=VALIDATION_SEED)

    def step(rng, noise, batch):
        index = rng.integers(len(data), size=batch)
        rgb, truth = _batch(data.images[index], data.depths[index])
        return F.l1_loss(net(rgb), truth)

    def sample(step):
        predicted = net.eval()(_batch(images[:SHOWN], depths[:SHOWN])[0])[:, 0].numpy()
        rows = [list(images[:SHOWN]), [_gray(d) for d in depths[:SHOWN]], [_gray(d) for d in predicted]]
        save_grid([im for row in rows for im in row], stage.file(f"samples_{step:06d}.png"), columns=SHOWN)

    if not trainer.run(step, sample):
        return False
    trained = trainer.trained("depth")
    with torch.no_grad():
        predicted = trained(_batch(images, depths)[0])[:, 0].numpy()
    correlation = float(np.corrcoef(predicted.ravel(), depths.ravel())[0, 1])
    save(trained, weights_file(settings))
    stage.finish({**trainer.summary(), "parameters": sum(p.numel() for p in net.parameters()),
                  "validation_correlation": correlation, "weights": str(weights_file(settings))})
    print(f"[{NAME}] done: correlation with the true depth {correlation:.3f}", flush=True)
    return True


def _gray(depth: np.ndarray) -> np.ndarray:
    return (np.clip(depth, 0, 1) * 255).round().astype(np.uint8)
