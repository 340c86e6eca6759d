"""diffusers / transformers configs for a checkpoint: the family's shipped config, fitted to the file.

models/configs/<name>/ holds the real SD release configs (JSON only). A checkpoint's widths, depths
and channel counts are read from its tensors and override them, so a full-size SD1.5 file and a tiny
SD1-shaped test model go through the same code. What tensors cannot show (GroupNorm groups, head
counts) follows the family's convention, or the exact configs that Inkwash records in the files it
writes (metadata key `inkwash.configs`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from .model_types import SD1, SD2, SDXL, SDXL_REFINER, Family

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "models" / "configs"
CONFIGS_METADATA = "inkwash.configs"

# SD2 and SDXL attention uses 64-channel heads; SD1 a fixed count of 8 heads (its config's value).
HEAD_CHANNELS = 64


def family_folder(family: Family) -> Path:
    if family.name == SD1:
        name = "sd15_inpaint" if family.kind == "inpaint" else "sd15"
    elif family.name == SD2:
        name = {"inpaint": "sd2_inpaint", "depth": "sd2_depth"}.get(
            family.kind, "sd2_768_v" if family.prediction_type == "v_prediction" else "sd2_base")
    elif family.name == SDXL:
        name = "sdxl_base"
    elif family.name == SDXL_REFINER:
        name = "sdxl_refiner"
    else:
        raise ValueError(f"unknown model family {family.name!r}")
    return CONFIG_ROOT / name


CONTROLNET_FOLDERS = {SD1: "controlnet_sd15", SD2: "controlnet_sd2", SDXL: "controlnet_sdxl"}


def controlnet_folder(family: Family) -> Path:
    if family.name not in CONTROLNET_FOLDERS:
        raise ValueError(f"{family.name} ControlNets are not supported (SD1, SD2 and SDXL are)")
    return CONFIG_ROOT / CONTROLNET_FOLDERS[family.name]


def read_config(folder: Path, component: str = "") -> dict:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((folder / component / name).read_text())


def recorded_configs(metadata: Mapping[str, str]) -> dict:
    """The exact component configs recorded by save_checkpoint, or {} for files from elsewhere."""
    try:
        configs = json.loads(metadata.get(CONFIGS_METADATA, "{}"))
    except json.JSONDecodeError:
        return {}
    return configs if isinstance(configs, dict) else {}


def indices(sd: Mapping, prefix: str) -> list[int]:
    """Sorted distinct integers N in keys `prefix` + "N." ..."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pattern.match(k))})


def ldm_conversion_config(sd: Mapping, prefix: str) -> dict:
    """The little that diffusers' UNet / ControlNet converters need before the real config is known:
    resnets per level (the first downsampler sits right after them) and the SDXL size embedding."""
    blocks = indices(sd, prefix + "input_blocks.")
    downsamplers = [i for i in blocks if f"{prefix}input_blocks.{i}.0.op.weight" in sd]
    config = {"layers_per_block": downsamplers[0] - 1 if downsamplers else len(blocks) - 1}
    if prefix + "label_emb.0.0.weight" in sd:
        config["addition_embed_type"] = "text_time"
    return config


def _shape(sd: Mapping, key: str) -> tuple:
    shapes = getattr(sd, "shapes", None)
    return tuple(shapes[key]) if shapes is not None else tuple(sd[key].shape)


def _transformer_depth(sd: Mapping, prefix: str) -> int:
    return len(indices(sd, prefix + "transformer_blocks."))


def _unet_like(sd: Mapping, config: dict, family: Family, exact: bool) -> dict:
    """The parts UNet and ControlNet share, from diffusers-named weights."""
    levels = indices(sd, "down_blocks.")
    widths = [_shape(sd, f"down_blocks.{i}.resnets.0.conv1.weight")[0] for i in levels]
    attention = [f"down_blocks.{i}.attentions.0.proj_in.weight" in sd for i in levels]
    depths = [_transformer_depth(sd, f"down_blocks.{i}.attentions.0.") for i in levels]
    mid_depth = _transformer_depth(sd, "mid_block.attentions.0.")
    if attention[-1] and depths[-1] != mid_depth:
        raise ValueError(f"mid block has {mid_depth} transformer layers, the last level {depths[-1]}")
    depths = [d or 1 for d in depths[:-1]] + [mid_depth or 1]
    proj_in = next(_shape(sd, k) for k in sd if k.endswith("proj_in.weight"))
    config.update(
        in_channels=_shape(sd, "conv_in.weight")[1],
        block_out_channels=widths,
        layers_per_block=len(indices(sd, "down_blocks.0.resnets.")),
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        transformer_layers_per_block=depths,
        cross_attention_dim=next(_shape(sd, k)[1] for k in sd if k.endswith("attn2.to_k.weight")),
        use_linear_projection=len(proj_in) == 2,
    )
    if not exact and family.name != SD1:
        config["attention_head_dim"] = [max(1, w // HEAD_CHANNELS) for w in widths]
    return config


def unet_config(sd: Mapping, base: dict, family: Family, exact: bool, pooled_dim: int | None = None) -> dict:
    """`base` (the family's or the recorded config) fitted to diffusers-named UNet weights `sd`.
    `pooled_dim` (SDXL: the width of CLIP-G's projection) gives the size-embedding width."""
    config = _unet_like(sd, dict(base), family, exact)
    config["out_channels"] = _shape(sd, "conv_out.weight")[0]
    config["up_block_types"] = [t.replace("Down", "Up") for t in reversed(config["down_block_types"])]
    if "add_embedding.linear_1.weight" in sd:
        adm = _shape(sd, "add_embedding.linear_1.weight")[1]
        config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=adm)
        # the refiner's aesthetic score takes the place of base's 2 target-size ids
        time_ids = 5 if family.name == SDXL_REFINER else 6
        if not exact and pooled_dim is not None and (adm - pooled_dim) % time_ids == 0:
            config["addition_time_embed_dim"] = (adm - pooled_dim) // time_ids
    return config


def controlnet_config(sd: Mapping, base: dict, family: Family, exact: bool) -> dict:
    config = _unet_like(sd, dict(base), family, exact)
    hint = "controlnet_cond_embedding."
    blocks = indices(sd, hint + "blocks.")
    config.update(
        conditioning_channels=_shape(sd, hint + "conv_in.weight")[1],
        conditioning_embedding_out_channels=[_shape(sd, hint + "conv_in.weight")[0]]
        + [_shape(sd, f"{hint}blocks.{i}.weight")[0] for i in blocks[1::2]],
    )
    if "add_embedding.linear_1.weight" in sd:  # SDXL: the size embedding, as the UNet's
        config.update(addition_embed_type="text_time",
                      projection_class_embeddings_input_dim=_shape(sd, "add_embedding.linear_1.weight")[1])
    return config


def vae_config(sd: Mapping, base: dict) -> dict:
    levels = indices(sd, "encoder.down_blocks.")
    return dict(
        base,
        in_channels=_shape(sd, "encoder.conv_in.weight")[1],
        out_channels=_shape(sd, "decoder.conv_out.weight")[0],
        latent_channels=_shape(sd, "decoder.conv_in.weight")[1],
        block_out_channels=[_shape(sd, f"encoder.down_blocks.{i}.resnets.0.conv2.weight")[0] for i in levels],
        layers_per_block=len(indices(sd, "encoder.down_blocks.0.resnets.")),
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
        use_quant_conv="quant_conv.weight" in sd,
        use_post_quant_conv="post_quant_conv.weight" in sd,
        mid_block_add_attention="encoder.mid_block.attentions.0.to_q.weight" in sd,
    )


def clip_config(sd: Mapping, prefix: str, base: dict, exact: bool, open_clip: bool,
                drop_last_layer: bool = False) -> dict:
    """A CLIPTextConfig dict from a text encoder's original weights under `prefix`: the transformers
    layout of CLIP-L, or OpenCLIP's (`open_clip`). SD2 drops OpenCLIP's last block
    (`drop_last_layer`): it conditions on the penultimate layer."""
    if open_clip:
        token, position = "token_embedding.weight", "positional_embedding"
        layers, fc1 = "transformer.resblocks.", "transformer.resblocks.0.mlp.c_fc.weight"
    else:
        token = "text_model.embeddings.token_embedding.weight"
        position = "text_model.embeddings.position_embedding.weight"
        layers, fc1 = "text_model.encoder.layers.", "text_model.encoder.layers.0.mlp.fc1.weight"
    vocab, hidden = _shape(sd, prefix + token)
    config = dict(
        base,
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=_shape(sd, prefix + position)[0],
        num_hidden_layers=len(indices(sd, prefix + layers)) - (1 if drop_last_layer else 0),
        intermediate_size=_shape(sd, prefix + fc1)[0],
    )
    if open_clip and prefix + "text_projection" in sd:
        config["projection_dim"] = _shape(sd, prefix + "text_projection")[1]
    if not exact:
        config["num_attention_heads"] = max(1, hidden // HEAD_CHANNELS)
    return config
