"""Checkpoint files for the benchmarks: the tests' tiny SD1-shaped model, or SD 1.5 at full size with
random weights (what matters for speed and memory is the shape, not the values)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def full_size_sd15(dtype: torch.dtype = torch.float16):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from inkwash.nodes.runtime.model_configs import CONFIG_ROOT, read_config
    from inkwash.nodes.runtime.model_types import SD1, DiffusionModel, Family, TextEncoder, Vae
    from inkwash.nodes.runtime.tokenizers import clip_tokenizer

    folder, family = CONFIG_ROOT / "sd15", Family(SD1)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(read_config(folder, "unet")).to(dtype)
    vae = AutoencoderKL.from_config(read_config(folder, "vae")).to(dtype)
    text = CLIPTextModel(CLIPTextConfig.from_dict(read_config(folder, "text_encoder"))).to(dtype)
    return (DiffusionModel(unet, family, read_config(folder, "scheduler")),
            TextEncoder([clip_tokenizer()], [text], family), Vae(vae, family))


def write_checkpoint(folder: Path, model: str = "tiny") -> Path:
    """Write the benchmark checkpoint into `folder` with Inkwash's own CheckpointSave layout."""
    from tiny_models import tiny_sd1_standard

    from inkwash.nodes.runtime.checkpoint_save import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    parts = full_size_sd15() if model == "sd15" else tiny_sd1_standard()
    return save_checkpoint(folder / f"bench-{model}.safetensors", *parts)
