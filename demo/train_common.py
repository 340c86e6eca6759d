"""What every training stage shares: its folder, a resumable training loop, and progress output.

A stage's folder (`<out>/<stage>/`) holds:
    checkpoint.pt   weights, optimizer, EMA, step and RNG states, rewritten every ~2 minutes
    loss.csv        step, loss, learning rate, training seconds: one row per step, appended
    samples_*.png   sample grids written as training goes
    done.json       written when the stage has produced its result; the stage is then skipped

A stage trains for a time budget rather than a step count: its learning-rate schedule follows the
training time spent (kept in the checkpoint), so the same recipe fits a fast or a slow machine, or one
that slows down while others use it. A plan may fix its step count instead (sized to its budget on two
idle cores), where the result should not depend on what else the machine was doing; `--steps` fixes
every stage's count (smoke tests).
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass
class Settings:
    """What the command line decided for this run."""

    out: Path  # build folder: datasets, stage folders
    models: Path  # where the finished models go (checkpoints/, controlnet/, annotators/)
    images: int = 24576  # size of the generated world dataset
    seed: int = 0
    minutes: float | None = None  # wall time allowed to each stage in this run; it then pauses
    steps: int | None = None  # a fixed step count per stage instead of one fitted to its budget
    batch: int | None = None  # override every stage's batch size
    stop_after: int | None = None  # pause each stage after this many steps in this run
    checkpoint_every_s: float = 120.0
    sample_every_s: float = 300.0


@dataclass
class Plan:
    """A stage's training recipe."""

    budget_minutes: float  # training time (excluding samples and checkpoints)
    batch: int
    lr: float
    warmup: int = 100
    weight_decay: float = 0.01
    ema: float | None = None  # decay of an exponential moving average of the weights, if any
    grad_clip: float = 1.0
    steps: int | None = None  # a fixed step count (about budget_minutes on two idle cores) instead of the budget
    mixed_precision: bool = False  # bfloat16 autocast where the CPU computes it (see bfloat16_native)


def bfloat16_native() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware, with AMX (Intel) or AVX-512 BF16 (AMD
    Zen 4 and later): a UNet step under bfloat16 autocast takes 0.55 s instead of 0.93 with AMX, 0.58
    instead of 1.07 on two AMD EPYC cores with AVX-512 BF16 (batch 64). Elsewhere bfloat16 is emulated
    and slower than float32, so those machines train in float32."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(probe is not None and probe() for probe in probes)


class StageDir:
    """One stage's folder."""

    def __init__(self, settings: Settings, name: str):
        self.name = name
        self.path = Path(settings.out) / name
        self.checkpoint = self.path / "checkpoint.pt"
        self.loss_csv = self.path / "loss.csv"
        self.done_file = self.path / "done.json"

    def is_done(self) -> bool:
        return self.done_file.is_file()

    def done_info(self) -> dict:
        return json.loads(self.done_file.read_text())

    def finish(self, info: dict) -> None:
        _write_atomic(self.done_file, lambda f: f.write_text(json.dumps(info, indent=1)))

    def clear(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)

    def file(self, name: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / name


class Ema:
    """Exponential moving average of some modules' weights, warmed up so early steps count less."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module]) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                shadow = self.shadow[name][key]
                if value.dtype.is_floating_point:
                    shadow.lerp_(value, 1 - decay)
                else:
                    shadow.copy_(value)

    def averaged(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """A copy of `module` holding the averaged weights."""
        copy = deepcopy(module)
        copy.load_state_dict(self.shadow[name])
        return copy

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow, self.updates = state["shadow"], state["updates"]


class Trainer:
    """A resumable training loop over `modules` (everything with weights that this stage trains).

    `step_fn(rng, noise, batch)` computes one batch's loss (a scalar tensor) from numpy's `rng` (which
    examples) and the torch generator `noise`; the trainer does backward, clipping, the optimizer
    step and the EMA. Both random streams are saved with the checkpoint, so a resumed run draws what
    an uninterrupted one would have."""

    def __init__(self, stage: StageDir, settings: Settings, plan: Plan, modules: dict[str, torch.nn.Module],
                 seed: int = 0):
        self.stage, self.settings, self.plan, self.modules = stage, settings, plan, modules
        self.batch = settings.batch or plan.batch
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=plan.weight_decay)
        self.params = params
        self.ema = Ema(modules, plan.ema) if plan.ema else None
        self.rng = np.random.default_rng([settings.seed, seed])
        self.noise = torch.Generator().manual_seed(settings.seed * 1000 + seed)
        self.step = 0
        self.total_steps = settings.steps or plan.steps  # None: train for the time budget
        self.train_seconds = 0.0
        self.autocast = plan.mixed_precision and bfloat16_native()
        self._resume()

    # -- state -------------------------------------------------------------------------------------------

    def _resume(self) -> None:
        if not self.stage.checkpoint.is_file():
            return
        state = torch.load(self.stage.checkpoint, map_location="cpu", weights_only=True)
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.rng.bit_generator.state = state["rng"]
        self.noise.set_state(state["noise"])
        self.step, self.train_seconds = state["step"], state["train_seconds"]
        _truncate_loss_csv(self.stage.loss_csv, self.step)
        print(f"[{self.stage.name}] resuming at step {self.step}"
              + (f" of {self.total_steps}" if self.total_steps else ""), flush=True)

    def save(self) -> None:
        state = {
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": self.rng.bit_generator.state, "noise": self.noise.get_state(),
            "step": self.step, "train_seconds": self.train_seconds,
        }
        _write_atomic(self.stage.file("checkpoint.pt"), lambda f: torch.save(state, f))

    def summary(self) -> dict:
        """What a stage's done.json records about its training."""
        return {"step": self.step, "seconds_per_step": self.train_seconds / max(self.step, 1), "batch": self.batch,
                "precision": "bfloat16 autocast" if self.autocast else "float32"}

    def trained(self, name: str) -> torch.nn.Module:
        """A copy of a module with the weights to use (the EMA's when there is one), in eval mode."""
        module = self.modules[name]
        return (self.ema.averaged(name, module) if self.ema is not None else deepcopy(module)).eval()

    # -- the loop ----------------------------------------------------------------------------------------

    @property
    def budget_s(self) -> float:
        return self.plan.budget_minutes * 60.0

    def progress(self) -> float:
        """0..1: the share of the steps, or of the time budget, done."""
        return self.step / self.total_steps if self.total_steps else self.train_seconds / self.budget_s

    def learning_rate(self) -> float:
        """Linear warm-up, then cosine decay to a tenth."""
        warmup = min(self.plan.warmup, max(1, self.total_steps // 10)) if self.total_steps else self.plan.warmup
        if self.step < warmup:
            return self.plan.lr * (self.step + 1) / warmup
        return self.plan.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, self.progress()))))

    def run(self, step_fn: Callable, sample_fn: Callable[[int], None] | None = None) -> bool:
        """Train until the stage is complete (True) or this run's limits are reached (False; the
        checkpoint is saved, and the next run continues from it)."""
        started = time.monotonic()
        deadline = started + self.settings.minutes * 60 if self.settings.minutes is not None else math.inf
        last_save = last_sample = last_print = started
        timings: list[float] = []
        rows: list[tuple] = []
        steps_this_run = 0
        for module in self.modules.values():
            module.train()
        while self.progress() < 1.0:
            now = time.monotonic()
            if now >= deadline or (self.settings.stop_after is not None and steps_this_run >= self.settings.stop_after):
                self._checkpoint(rows)
                print(f"[{self.stage.name}] paused at step {self.step}; run again to continue", flush=True)
                return False
            lr = self.learning_rate()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            tick = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss = step_fn(self.rng, self.noise, self.batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.plan.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.modules)
            elapsed = time.perf_counter() - tick
            self.step += 1
            steps_this_run += 1
            self.train_seconds += elapsed
            timings.append(elapsed)
            rows.append((self.step, f"{loss.item():.6f}", f"{lr:.3g}", f"{self.train_seconds:.1f}"))
            now = time.monotonic()
            if now - last_print >= 10 or self.progress() >= 1.0 or self.step == 1:
                self._print(loss.item(), timings[-50:])
                last_print = now
            if now - last_save >= self.settings.checkpoint_every_s:
                self._checkpoint(rows)
                last_save = now
            if sample_fn is not None and now - last_sample >= self.settings.sample_every_s:
                self._sample(sample_fn)
                last_sample = time.monotonic()
        self._checkpoint(rows)
        if sample_fn is not None:
            self._sample(sample_fn)
        return True

    def _print(self, loss: float, recent: list[float]) -> None:
        """Progress; the ETA counts training time only (samples and checkpoints add a little)."""
        rate = len(recent) / max(sum(recent), 1e-9)
        if self.total_steps:
            total, remaining = f"/{self.total_steps}", (self.total_steps - self.step) / rate
        else:
            remaining = max(0.0, self.budget_s - self.train_seconds)
            total = f"/~{self.step + int(remaining * rate)}"
        print(f"[{self.stage.name}] step {self.step}{total}  loss {loss:.4f}  {rate:.2f} it/s  "
              f"ETA {_duration(remaining)}", flush=True)

    def _checkpoint(self, rows: list[tuple]) -> None:
        # weights first, then the loss rows they account for (a resumed run drops any rows past it)
        self.save()
        _append_loss_rows(self.stage.file("loss.csv"), rows)
        rows.clear()

    def _sample(self, sample_fn: Callable[[int], None]) -> None:
        with torch.no_grad():
            sample_fn(self.step)
        for module in self.modules.values():
            module.train()


# -- files -------------------------------------------------------------------------------------------------

def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary file beside `path`, then rename it over: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _append_loss_rows(path: Path, rows: list[tuple]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(("step", "loss", "lr", "train_seconds"))
        writer.writerows(rows)


def _truncate_loss_csv(path: Path, step: int) -> None:
    """Drop rows past the checkpoint's step (written just before a kill)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(kept) != len(rows):
        _write_atomic(path, lambda tmp: tmp.write_text("".join(",".join(r) + "\n" for r in kept)))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def save_grid(images: list[np.ndarray], path: Path, columns: int) -> None:
    """uint8 images [H,W,3] (or [H,W]) of one size, in a grid, row by row."""
    images = [np.repeat(im[..., None], 3, -1) if im.ndim == 2 else im for im in images]
    height, width = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    grid = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """IMAGE [B,H,W,C] in 0..1 -> uint8 arrays."""
    return list((images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
