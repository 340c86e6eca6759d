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


def full_size_sdxl(dtype: torch.dtype = torch.float16):
    """SDXL base at full size (2.6B-parameter UNet, CLIP-L and CLIP-G) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from inkwash.nodes.runtime.model_configs import CONFIG_ROOT, read_config
    from inkwash.nodes.runtime.model_types import SDXL, DiffusionModel, Family, TextEncoder, Vae
    from inkwash.nodes.runtime.tokenizers import clip_tokenizer

    folder, family = CONFIG_ROOT / "sdxl_base", Family(SDXL)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(read_config(folder, "unet")).to(dtype)
    vae = AutoencoderKL.from_config(read_config(folder, "vae")).to(dtype)
    clip_l = CLIPTextModel(CLIPTextConfig.from_dict(read_config(folder, "text_encoder"))).to(dtype)
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(read_config(folder, "text_encoder_2"))).to(dtype)
    return (DiffusionModel(unet, family, read_config(folder, "scheduler")),
            TextEncoder([clip_tokenizer(), clip_tokenizer(pad_with_zero=True)], [clip_l, clip_g], family),
            Vae(vae, family))


def write_checkpoint(folder: Path, model: str = "tiny") -> Path:
    """Write the benchmark checkpoint into `folder` with Inkwash's own CheckpointSave layout: "sd15" and
    "sdxl" at full size with random weights, "tiny" and "tiny-sdxl" the tests' small ones."""
    from tiny_models import tiny_sd1_standard, tiny_sdxl

    from inkwash.nodes.runtime.checkpoint_save import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    builders = {"sd15": full_size_sd15, "sdxl": full_size_sdxl, "tiny": tiny_sd1_standard, "tiny-sdxl": tiny_sdxl}
    return save_checkpoint(folder / f"bench-{model}.safetensors", *builders[model]())
