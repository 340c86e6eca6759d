"""Which model weight a LoRA file's key is for.

LoRA files name their target modules in several spellings. Rather than translating each spelling
(diffusers' `lora_conversion_utils` does that for kohya files, and raises on anything it doesn't
know), every spelling of every module is listed from the model's side, so a file key is one lookup:

  kohya (diffusers names)  lora_unet_down_blocks_0_attentions_0_proj_in
  kohya (LDM / SGM names)  lora_unet_input_blocks_1_1_proj_in       (SD1 A1111-era files, all SDXL files)
  kohya text encoders      lora_te_text_model_encoder_layers_0_mlp_fc1 (SDXL: lora_te1_ CLIP-L, lora_te2_ CLIP-G)
  diffusers / PEFT         unet.down_blocks.0.attentions.0.proj_in, text_encoder.text_model.encoder...
  older diffusers          ....attn1.processor.to_q_lora, text_encoder....self_attn.to_q_lora, no prefix

The LDM names come from ldm_keys, the same table that writes single-file checkpoints.
"""
from __future__ import annotations

import re

import torch

from .ldm_keys import TEXT_ENCODERS, unet_to_ldm

# Key endings -> which part of a LoRA pair the tensor is. The "_lora.down" form is the attention
# processor era of diffusers (`attn1.processor.to_q_lora.down.weight`).
PARTS = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
    (".alpha", "alpha"),
)

# Text encoders: kohya prefixes of each diffusers component (diffusers reads lora_te_ and lora_te1_ alike).
KOHYA_TEXT_PREFIXES = {"text_encoder": ("lora_te_", "lora_te1_"), "text_encoder_2": ("lora_te2_",)}

_PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d)


def split_key(key: str) -> tuple[str, str] | None:
    """(module name as the file spells it, "down" | "up" | "mid" | "alpha"), or None for keys that are
    not plain LoRA pairs (LoHa, LoKr, DoRA scales, full diffs...)."""
    for ending, part in PARTS:
        if key.endswith(ending):
            return canonical_name(key[:-len(ending)]), part
    return None


def canonical_name(name: str) -> str:
    """Older diffusers spellings -> module names: `attn1.processor.to_q` -> `attn1.to_q`,
    `to_out` -> `to_out.0`, and the text encoder's `self_attn.to_q` -> `self_attn.q_proj`."""
    name = name.replace(".processor.", ".")
    name = re.sub(r"\.self_attn\.to_(q|k|v)$", r".self_attn.\1_proj", name)
    name = re.sub(r"\.self_attn\.to_out$", ".self_attn.out_proj", name)
    return re.sub(r"\.to_out$", ".to_out.0", name)


def _kohya(prefix: str, module: str) -> str:
    return prefix + module.replace(".", "_")


def unet_names(unet) -> dict[str, str]:
    """Every spelling of every patchable UNet module -> the module's name in the UNet."""
    modules = [name for name, module in unet.named_modules() if isinstance(module, _PATCHABLE)]
    names: dict[str, str] = {}
    for module in modules:
        names[module] = module  # attention-processor files carry no prefix
        names["unet." + module] = module
        names[_kohya("lora_unet_", module)] = module
        try:
            ldm = next(iter(unet_to_ldm({module + ".weight": None}, unet.config)))
        except KeyError:
            continue  # no LDM counterpart
        names[_kohya("lora_unet_", ldm.removesuffix(".weight"))] = module
    return names


def text_encoder_names(encoder, component: str) -> dict[str, str]:
    """Spellings of a text encoder's patchable modules -> module names. `component` is the diffusers
    name ("text_encoder", "text_encoder_2"). transformers 5 dropped the `text_model.` level from
    CLIPTextModel; files keep it (kohya always, diffusers/PEFT when saved with transformers 4)."""
    names: dict[str, str] = {}
    for module, layer in encoder.named_modules():
        if not isinstance(layer, _PATCHABLE):
            continue
        full = module if module.startswith(("text_model.", "text_projection")) else "text_model." + module
        names[f"{component}.{module}"] = module
        names[f"{component}.{full}"] = module
        for prefix in KOHYA_TEXT_PREFIXES[component]:
            names[_kohya(prefix, full)] = module
    return names


def clip_components(family_name: str) -> list[str]:
    """Diffusers component name of each of a family's text encoders, in TextEncoder.encoders order."""
    return [component for _, _, component in TEXT_ENCODERS[family_name]]
