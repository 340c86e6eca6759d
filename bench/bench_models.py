"""Checkpoint files for the benchmarks: the tests' tiny SD1-shaped model, or SD 1.5 at full size with
random weights (what matters for speed and memory is the shape, not the values)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def full_size_sd15(dtype: torch.dtype = torch.float16):
    """SD 1.5 at full size with random weights."""
    from transformers import CLIPTextModel

    from inkwash.nodes.runtime.model_types import SD1
    from inkwash.nodes.runtime.tokenizers import clip_tokenizer

    return _random_weights("sd15", SD1, dtype, [("text_encoder", CLIPTextModel, clip_tokenizer())])


def full_size_sdxl(dtype: torch.dtype = torch.float16):
    """SDXL base at full size (2.6B-parameter UNet, CLIP-L and CLIP-G) with random weights."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from inkwash.nodes.runtime.model_types import SDXL
    from inkwash.nodes.runtime.tokenizers import clip_tokenizer

    return _random_weights("sdxl_base", SDXL, dtype, [
        ("text_encoder", CLIPTextModel, clip_tokenizer()),
        ("text_encoder_2", CLIPTextModelWithProjection, clip_tokenizer(pad_with_zero=True))])


def _random_weights(config: str, family_name: str, dtype: torch.dtype, encoders: list):
    """(model, clip, vae) built from a shipped config folder; `encoders`: (config name, class, tokenizer)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    from inkwash.nodes.runtime.model_configs import CONFIG_ROOT, read_config
    from inkwash.nodes.runtime.model_types import DiffusionModel, Family, TextEncoder, Vae

    folder, family = CONFIG_ROOT / config, Family(family_name)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(read_config(folder, "unet")).to(dtype)
    vae = AutoencoderKL.from_config(read_config(folder, "vae")).to(dtype)
    texts = [cls(CLIPTextConfig.from_dict(read_config(folder, name))).to(dtype) for name, cls, _ in encoders]
    return (DiffusionModel(unet, family, read_config(folder, "scheduler")),
            TextEncoder([tokenizer for _, _, tokenizer in encoders], texts, family), Vae(vae, family))


def write_checkpoint(folder: Path, model: str = "tiny") -> Path:
    """Write the benchmark checkpoint into `folder` with Inkwash's own CheckpointSave layout: "sd15" and
    "sdxl" at full size with random weights, "tiny" and "tiny-sdxl" the tests' small ones."""
    from tiny_models import tiny_sd1_standard, tiny_sdxl

    from inkwash.nodes.runtime.checkpoint_save import save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    builders = {"sd15": full_size_sd15, "sdxl": full_size_sdxl, "tiny": tiny_sd1_standard, "tiny-sdxl": tiny_sdxl}
    return save_checkpoint(folder / f"bench-{model}.safetensors", *builders[model]())
