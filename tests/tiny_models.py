"""Tiny random models in the real SD shapes (same block layout, tiny widths), for fast tests.

Each family builder returns the runtime values a checkpoint loader returns: (DiffusionModel,
TextEncoder, Vae); `write_tiny_checkpoint` turns them into a loadable single file.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from inkwash.nodes.runtime.checkpoint_save import save_checkpoint, save_controlnet
from inkwash.nodes.runtime.model_configs import family_folder, read_config
from inkwash.nodes.runtime.model_types import (SD1, SD2, SDXL, SDXL_REFINER, ControlNet, DiffusionModel, Family,
                                               TextEncoder, Vae)
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


def tiny_vae(seed: int = 0, scaling_factor: float = 0.18215, force_upcast: bool = False) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=2,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64, scaling_factor=scaling_factor, force_upcast=force_upcast,
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


def tiny_open_clip(hidden: int = 32, projection_dim: int | None = None, seed: int = 0):
    """OpenCLIP-shaped (gelu) text encoder: SD2's, or with `projection_dim` SDXL's CLIP-G."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=3,
                            num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu",
                            projection_dim=projection_dim or hidden, bos_token_id=49406, eos_token_id=49407,
                            pad_token_id=0)
    return (CLIPTextModelWithProjection(config) if projection_dim else CLIPTextModel(config)).eval()


def _scheduler(family: Family) -> dict:
    config = read_config(family_folder(family), "scheduler")
    config["prediction_type"] = family.prediction_type
    return config


def tiny_sd2(prediction_type: str = "v_prediction", kind: str = "base", seed: int = 0
             ) -> tuple[DiffusionModel, TextEncoder, Vae]:
    """SD2-shaped: linear projections in the transformers, 16-channel heads, OpenCLIP text encoder."""
    in_channels = {"base": 4, "inpaint": 9, "depth": 5}[kind]
    family = Family(SD2, kind=kind, prediction_type=prediction_type)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64), norm_num_groups=8, attention_head_dim=(2, 2, 4, 4),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, use_linear_projection=True,
    ).eval()
    model = DiffusionModel(unet, family, _scheduler(family), name=f"tiny-sd2-{kind}")
    clip = TextEncoder([clip_tokenizer(pad_with_zero=True)], [tiny_open_clip(seed=seed)], family)
    return model, clip, Vae(tiny_vae(seed=seed), family)


def tiny_sdxl(refiner: bool = False, seed: int = 0) -> tuple[DiffusionModel, TextEncoder, Vae]:
    """SDXL-shaped: size/crop (refiner: aesthetic score) embeddings added to the time embedding, CLIP-L
    and CLIP-G (refiner: CLIP-G only) whose hidden states are concatenated as context."""
    family = Family(SDXL_REFINER if refiner else SDXL)
    torch.manual_seed(seed)
    clip_g = tiny_open_clip(projection_dim=32, seed=seed)
    if refiner:
        blocks = dict(block_out_channels=(32, 32, 64, 64), attention_head_dim=(2, 2, 4, 4),
                      transformer_layers_per_block=2,
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
        encoders, tokenizers, time_ids = [clip_g], [clip_tokenizer(pad_with_zero=True)], 5
    else:
        blocks = dict(block_out_channels=(32, 64, 64), attention_head_dim=(2, 4, 4),
                      transformer_layers_per_block=(1, 1, 2),
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
        encoders = [tiny_clip(seed=seed), clip_g]
        tokenizers, time_ids = [clip_tokenizer(), clip_tokenizer(pad_with_zero=True)], 6
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=8, use_linear_projection=True,
        cross_attention_dim=sum(e.config.hidden_size for e in encoders), addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=time_ids * 8 + 32, **blocks,
    ).eval()
    model = DiffusionModel(unet, family, _scheduler(family), name=f"tiny-{family.name}")
    vae = tiny_vae(seed=seed, scaling_factor=0.13025, force_upcast=True)
    return model, TextEncoder(tokenizers, encoders, family), Vae(vae, family)


def tiny_controlnet(family_name: str = SD1, seed: int = 0) -> ControlNet:
    """A ControlNet copied from the family's tiny UNet (SD1, SD2 or SDXL, whose copy keeps the size
    embedding), its zero convolutions made random so that its output depends on every weight."""
    model = {SD1: tiny_sd1, SD2: tiny_sd2, SDXL: tiny_sdxl}[family_name](seed=seed)[0]
    controlnet = ControlNetModel.from_unet(model.unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).eval()
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                "controlnet_cond_embedding.conv_out")):
                param.normal_(0, 0.1)
    return ControlNet(controlnet, Family(family_name), name=f"tiny-controlnet-{family_name}")


def write_tiny_checkpoint(folder: str | Path, name: str = "tiny-sd1.safetensors", parts=None, metadata=None) -> Path:
    """Save `parts` (model, clip, vae; default `tiny_sd1()`) as a single-file checkpoint `folder/name`."""
    model, clip, vae = parts or tiny_sd1()
    return save_checkpoint(Path(folder) / name, model, clip, vae, metadata=metadata)


def write_tiny_controlnet(folder: str | Path, name: str = "tiny-controlnet.safetensors",
                          family_name: str = SD1) -> Path:
    return save_controlnet(Path(folder) / name, tiny_controlnet(family_name))


def tiny_sd1_standard(seed: int = 0) -> tuple[DiffusionModel, TextEncoder, Vae]:
    """SD1-shaped and following SD's own conventions for what weights cannot show (32 GroupNorm
    groups, 8 UNet heads, 64-channel CLIP heads), so it loads from files that carry no recorded
    configs: .ckpt pickles, files written by other tools."""
    family = Family(SD1)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64, 64),
        attention_head_dim=8, cross_attention_dim=64,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()
    vae = AutoencoderKL(
        latent_channels=4, block_out_channels=(32, 32, 64, 64), layers_per_block=2, force_upcast=False,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    ).eval()
    config = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    model = DiffusionModel(unet, family, _scheduler(family), name="tiny-sd1-standard")
    return model, TextEncoder([clip_tokenizer()], [CLIPTextModel(config).eval()], family), Vae(vae, family)


class _DenseBlock(torch.nn.Module):
    """Real-ESRGAN's ResidualDenseBlock: five 3x3 convs, each seeing the block input and all before it."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", torch.nn.Conv2d(features + (i - 1) * growth, growth, 3, 1, 1))
        self.conv5 = torch.nn.Conv2d(features + 4 * growth, features, 3, 1, 1)

    def forward(self, x):
        seen = [x]
        for i in range(1, 5):
            seen.append(torch.nn.functional.leaky_relu(getattr(self, f"conv{i}")(torch.cat(seen, 1)), 0.2))
        return self.conv5(torch.cat(seen, 1)) * 0.2 + x


class _RRDB(torch.nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (_DenseBlock(features, growth) for _ in range(3))

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class TinyRRDBNet(torch.nn.Module):
    """Real-ESRGAN's RRDBNet (basicsr's key names, as RealESRGAN_x4plus.pth has them) with few blocks
    and features: x4 by two nearest-neighbour x2 steps, each followed by a conv."""

    def __init__(self, features: int = 8, blocks: int = 1, growth: int = 32, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        conv = lambda i, o: torch.nn.Conv2d(i, o, 3, 1, 1)  # noqa: E731
        self.conv_first = conv(3, features)
        self.body = torch.nn.Sequential(*(_RRDB(features, growth) for _ in range(blocks)))
        self.conv_body, self.conv_up1, self.conv_up2 = conv(features, features), conv(features, features), conv(
            features, features)
        self.conv_hr, self.conv_last = conv(features, features), conv(features, 3)
        with torch.no_grad():  # outputs that vary with the input, around 0.5, mostly inside 0..1
            probe = self(torch.rand(1, 3, 16, 16))
            spread = probe.std(dim=(0, 2, 3))
            self.conv_last.weight.mul_((0.15 / spread)[:, None, None, None])
            self.conv_last.bias.mul_(0.15 / spread)
            self.conv_last.bias.add_(0.5 - self(torch.rand(1, 3, 16, 16)).mean(dim=(0, 2, 3)))

    def forward(self, x):
        lrelu = lambda t: torch.nn.functional.leaky_relu(t, 0.2)  # noqa: E731
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = lrelu(self.conv_up1(torch.nn.functional.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = lrelu(self.conv_up2(torch.nn.functional.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(lrelu(self.conv_hr(feat)))


def write_tiny_esrgan(folder: str | Path, name: str = "4x-tiny-esrgan.safetensors", seed: int = 0) -> Path:
    """A TinyRRDBNet's weights as an upscale model file: .safetensors, or a plain torch state dict
    (.pth) as Real-ESRGAN ships them ({"params_ema": state dict})."""
    from safetensors.torch import save_file

    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in TinyRRDBNet(seed=seed).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"params_ema": state}, path)
    return path


# -- TAESD preview decoders ----------------------------------------------------------------------------------

def tiny_taesd(seed: int = 0, width: int = 8):
    """A diffusers AutoencoderTiny in TAESD's layout (4 stages of 3, 3, 3, 1 blocks) at a tiny width."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(width,) * 4, decoder_block_out_channels=(width,) * 4).eval()


def write_tiny_taesd_decoder(folder: str | Path, name: str = "taesd_decoder.pth", seed: int = 0):
    """A tiny TAESD's decoder weights as ComfyUI's vae_approx files hold them: madebyollin's nn.Sequential
    layout, index 0 the parameterless clamp (`1.weight`, `3.conv.0.weight`, ...), as a plain torch state
    dict (.pth) or safetensors. Returns (path, the AutoencoderTiny whose decoder it holds)."""
    from safetensors.torch import save_file

    model = tiny_taesd(seed)
    state = {}
    for key, value in model.decoder.state_dict().items():
        index, rest = key[len("layers."):].split(".", 1)
        state[f"{int(index) + 1}.{rest}"] = value.contiguous()
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path, model
