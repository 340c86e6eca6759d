"""The demo family's architectures: SD's components at a size that trains on two CPU cores.

Everything is 128x128 pixels -> 4x16x16 latents (a factor-8 VAE), so the UNet never sees more than
16x16 positions; its attention runs only at 8x8 and 4x4, where it is cheap. The noise schedule is
SD's own (scaled-linear betas 0.00085 -> 0.012 over 1000 steps, epsilon prediction), so the model
samples with every scheduler the studio offers, exactly like an SD 1.5 checkpoint.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPTextConfig, CLIPTextModel

IMAGE_SIZE = 128
LATENT_SIZE = IMAGE_SIZE // 8
TEXT_WIDTH = 64  # CLIP hidden size = the UNet's cross-attention width

# SD 1.5's scheduler_config.json: the schedule the UNet is trained with and samples with.
SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "clip_sample": False, "prediction_type": "epsilon", "timestep_spacing": "leading",
}


def vae() -> AutoencoderKL:
    """~1M parameters: four levels (three downsamplings) of one resnet each, attention in the middle."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=IMAGE_SIZE,
        block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def text_encoder() -> CLIPTextModel:
    """CLIP-L's layout and full 49,408-token vocabulary (so the real tokenizer works), 64 wide."""
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=3, num_attention_heads=2, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def unet() -> UNet2DConditionModel:
    """~6.6M parameters. SD's block types, three levels (16, 8, 4) instead of four, one resnet per
    block, cross-attention to the text on the two lower levels and the middle."""
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4,
        block_out_channels=(64, 128, 128), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8,
    )


def controlnet(base: UNet2DConditionModel) -> ControlNetModel:
    """A copy of the UNet's encoder half plus zero convolutions; the hint encoder takes 128x128
    RGB hints down to 16x16 with narrower layers than SD's (16, 32, 96, 256)."""
    return ControlNetModel.from_unet(base, conditioning_embedding_out_channels=(16, 32, 64, 128))


def attention_for_training(*modules: torch.nn.Module) -> None:
    """Matmul attention instead of scaled_dot_product_attention in these UNets, ControlNets and CLIP
    models: under bfloat16 autocast SDPA's backward on the CPU took 2.4 s of a 5.2 s UNet step, the
    matmuls 0.3 s. Only the training copies change; saved models keep their defaults."""
    for module in modules:
        if isinstance(module, CLIPTextModel):
            module.config._attn_implementation = "eager"
        else:
            module.set_attn_processor(AttnProcessor())


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def alphas_cumprod() -> torch.Tensor:
    """alpha_bar(t) of SCHEDULER's scaled-linear betas, t = 0..999."""
    betas = torch.linspace(SCHEDULER["beta_start"] ** 0.5, SCHEDULER["beta_end"] ** 0.5,
                           SCHEDULER["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()
