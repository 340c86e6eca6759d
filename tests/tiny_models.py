"""Tiny random models in the real SD shapes (same block layout, tiny widths), for fast tests.

Each builder returns the runtime values a checkpoint loader returns: (DiffusionModel, TextEncoder, Vae).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from inkwash.nodes.runtime.model_types import SD1, DiffusionModel, Family, TextEncoder, Vae
from inkwash.nodes.runtime.tokenizers import clip_tokenizer

# SD1.5's scheduler config (the values of its scheduler_config.json).
SD_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "clip_sample": False, "prediction_type": "epsilon", "timestep_spacing": "leading",
}


def tiny_unet(in_channels: int = 4, cross_attention_dim: int = 32, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64), norm_num_groups=8, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
    ).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=2,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64, scaling_factor=0.18215,
    ).eval()


def tiny_clip(hidden: int = 32, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=3,
                            num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModel(config).eval()


def tiny_sd1(kind: str = "base", seed: int = 0) -> tuple[DiffusionModel, TextEncoder, Vae]:
    """An SD1-shaped model; kind "inpaint" has 9 UNet input channels, "depth" 5."""
    in_channels = {"base": 4, "inpaint": 9, "depth": 5}[kind]
    family = Family(SD1, kind=kind)
    model = DiffusionModel(tiny_unet(in_channels, seed=seed), family, dict(SD_SCHEDULER), name=f"tiny-sd1-{kind}")
    clip = TextEncoder([clip_tokenizer()], [tiny_clip(seed=seed)], family)
    return model, clip, Vae(tiny_vae(seed=seed), family)
