"""diffusers / transformers weight names -> the original single-file (LDM / SGM) names.

The reverse of diffusers' `single_file_utils` converters, driven by the model's config so any depth
and width maps (diffusers' own reverse scripts hard-code SD's block counts). Each function returns
names relative to the component's checkpoint prefix (`model.diffusion_model.`, ...). Applied to a
model on the meta device it costs nothing, which is how the loader learns which original keys a
component uses.
"""
from __future__ import annotations

import re

import torch

from .model_detect import REFINER_CLIP_G, SD1_CLIP, SD2_CLIP, SDXL_CLIP_G, SDXL_CLIP_L
from .model_types import SD1, SD2, SDXL, SDXL_REFINER

# Per family: (checkpoint prefix, layout, diffusers component name) of each text encoder, in the
# order of TextEncoder.encoders.
TEXT_ENCODERS = {
    SD1: [(SD1_CLIP, "clip_l", "text_encoder")],
    SD2: [(SD2_CLIP, "open_clip", "text_encoder")],
    SDXL: [(SDXL_CLIP_L, "clip_l", "text_encoder"), (SDXL_CLIP_G, "open_clip", "text_encoder_2")],
    SDXL_REFINER: [(REFINER_CLIP_G, "open_clip", "text_encoder_2")],
}

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, prefixes: dict[str, str], inner: dict[str, dict[str, str]]) -> str:
    """Replace the longest known prefix of `key`; then rename the module right after it, using the
    `inner` table of the first marker (like ".resnets.") that the prefix contains."""
    parts = key.split(".")
    for n in range(min(len(parts) - 1, 6), 0, -1):
        prefix = ".".join(parts[:n]) + "."
        if prefix in prefixes:
            rest = key[len(prefix):]
            for marker, table in inner.items():
                if marker in prefix:
                    for old, new in table.items():
                        if rest.startswith(old + "."):
                            rest = new + rest[len(old):]
                            break
                    break
            return prefixes[prefix] + rest
    raise KeyError(f"no original name for weight {key!r}")


def _down_path(config) -> dict[str, str]:
    """UNet / ControlNet encoder half: conv_in, time embedding, down blocks, mid block."""
    per_level = config["layers_per_block"] + 1
    names = {
        "conv_in.": "input_blocks.0.0.",
        "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
        "mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i in range(len(config["block_out_channels"])):
        for j in range(config["layers_per_block"]):
            block = 1 + i * per_level + j
            names[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{block}.0."
            names[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{block}.1."
        names[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * per_level}.0.op."
    return names


def unet_to_ldm(state_dict: dict, config) -> dict:
    per_level = config["layers_per_block"] + 1
    names = _down_path(config) | {"conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    for i, block_type in enumerate(config["up_block_types"]):
        for j in range(per_level):
            names[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{i * per_level + j}.0."
            names[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{i * per_level + j}.1."
        # the upsampler follows the last resnet, and its attention block when the level has one
        slot = 2 if block_type.startswith("CrossAttn") else 1
        names[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{i * per_level + per_level - 1}.{slot}.conv."
    return {_rename(k, names, {".resnets.": _UNET_RESNET}): v for k, v in state_dict.items()}


def controlnet_to_ldm(state_dict: dict, config) -> dict:
    names = _down_path(config)
    hint_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    names["controlnet_cond_embedding.conv_in."] = "input_hint_block.0."
    for b in range(hint_blocks):
        names[f"controlnet_cond_embedding.blocks.{b}."] = f"input_hint_block.{2 * b + 2}."
    names["controlnet_cond_embedding.conv_out."] = f"input_hint_block.{2 * hint_blocks + 2}."
    for i in range(len(config["block_out_channels"]) * (config["layers_per_block"] + 1)):
        names[f"controlnet_down_blocks.{i}."] = f"zero_convs.{i}.0."
    names["controlnet_mid_block."] = "middle_block_out.0."
    return {_rename(k, names, {".resnets.": _UNET_RESNET}): v for k, v in state_dict.items()}


def vae_to_ldm(state_dict: dict, config) -> dict:
    levels = len(config["block_out_channels"])
    names = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    for part in ("encoder", "decoder"):
        names |= {f"{part}.conv_in.": f"{part}.conv_in.", f"{part}.conv_out.": f"{part}.conv_out.",
                  f"{part}.conv_norm_out.": f"{part}.norm_out.",
                  f"{part}.mid_block.attentions.0.": f"{part}.mid.attn_1.",
                  f"{part}.mid_block.resnets.0.": f"{part}.mid.block_1.",
                  f"{part}.mid_block.resnets.1.": f"{part}.mid.block_2."}
    for i in range(levels):
        up = levels - 1 - i  # the original decoder counts its levels from the bottom
        for j in range(config["layers_per_block"] + 1):
            names[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
            names[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{up}.block.{j}."
        names[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = f"encoder.down.{i}.downsample.conv."
        names[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = f"decoder.up.{up}.upsample.conv."
    out = {}
    for key, value in state_dict.items():
        name = _rename(key, names, {".resnets.": _VAE_RESNET, ".attentions.": _VAE_ATTENTION})
        if ".attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original attention uses 1x1 convolutions
        out[name] = value
    return out


def clip_l_to_ldm(state_dict: dict) -> dict:
    """CLIP-L keeps the transformers layout; transformers 5 dropped the `text_model.` level."""
    return {k if k.startswith("text_model.") else "text_model." + k: v for k, v in state_dict.items()}


_OPEN_CLIP_LAYER = {"self_attn.out_proj.": "attn.out_proj.", "layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.",
                    "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj."}
_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")


def open_clip_to_ldm(state_dict: dict) -> dict:
    """CLIPTextModel(WithProjection) -> OpenCLIP: q/k/v fused into in_proj, projection transposed."""
    out, qkv = {}, {}
    for key, value in state_dict.items():
        key = key.removeprefix("text_model.")
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.removeprefix("final_layer_norm.")] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif match := _LAYER.fullmatch(key):
            layer, rest = match.groups()
            if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                qkv.setdefault((layer, rest.rsplit(".", 1)[1]), {})[rest[10]] = value
                continue
            old = next((o for o in _OPEN_CLIP_LAYER if rest.startswith(o)), None)
            if old is None:
                raise KeyError(f"no original name for weight {key!r}")
            out[f"transformer.resblocks.{layer}.{_OPEN_CLIP_LAYER[old]}{rest[len(old):]}"] = value
        else:
            raise KeyError(f"no original name for weight {key!r}")
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def open_clip_identity_block(index: int, width: int, mlp_width: int, dtype: torch.dtype) -> dict:
    """An OpenCLIP residual block whose attention and MLP output projections are zero: it passes its
    input through unchanged."""
    def zeros(*shape):
        return torch.zeros(shape, dtype=dtype)

    block = {"ln_1.weight": torch.ones(width, dtype=dtype), "ln_1.bias": zeros(width),
             "attn.in_proj_weight": zeros(3 * width, width), "attn.in_proj_bias": zeros(3 * width),
             "attn.out_proj.weight": zeros(width, width), "attn.out_proj.bias": zeros(width),
             "ln_2.weight": torch.ones(width, dtype=dtype), "ln_2.bias": zeros(width),
             "mlp.c_fc.weight": zeros(mlp_width, width), "mlp.c_fc.bias": zeros(mlp_width),
             "mlp.c_proj.weight": zeros(width, mlp_width), "mlp.c_proj.bias": zeros(width)}
    return {f"transformer.resblocks.{index}.{k}": v for k, v in block.items()}
