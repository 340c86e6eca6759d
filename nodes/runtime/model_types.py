"""The values that travel along MODEL, CLIP, VAE, CONTROL_NET and CONDITIONING links.

They are thin wrappers over diffusers / transformers components, plus what the sampler must know
about the family they came from. LATENT, IMAGE and MASK follow ComfyUI: LATENT is a dict
`{"samples": [B,4,h,w], "noise_mask"?: [B,1,H,W] or [B,H,W]}`, IMAGE is a float tensor [B,H,W,C] in 0..1,
MASK is [B,H,W] in 0..1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Model families (name -> what differs). `kind` of a UNet: "base", "inpaint" (9 input channels) or
# "depth" (5 input channels).
SD1, SD2, SDXL, SDXL_REFINER = "sd1", "sd2", "sdxl", "sdxl_refiner"


@dataclass
class Family:
    name: str  # sd1 | sd2 | sdxl | sdxl_refiner
    kind: str = "base"  # base | inpaint | depth
    prediction_type: str = "epsilon"  # epsilon | v_prediction

    @property
    def is_xl(self) -> bool:
        return self.name in (SDXL, SDXL_REFINER)


@dataclass
class DiffusionModel:
    """MODEL: the denoising UNet and the noise schedule it was trained with."""

    unet: Any  # diffusers UNet2DConditionModel
    family: Family
    scheduler_config: dict  # a diffusers scheduler config (betas, prediction_type, timestep spacing...)
    name: str = ""
    # LoRA deltas added to the shared UNet only while this value samples (runtime/lora.py)
    lora_patches: tuple = ()


@dataclass
class TextEncoder:
    """CLIP: one (SD1/SD2) or two (SDXL: clip_l then clip_g; refiner: clip_g only) tokenizer/encoder pairs."""

    tokenizers: list
    encoders: list  # transformers CLIPTextModel / CLIPTextModelWithProjection
    family: Family
    stop_at_clip_layer: int = -1  # ComfyUI's CLIPSetLastLayer value; -2 is A1111's "Clip skip 2"
    # LoRA deltas added to the shared encoders only while this value encodes (runtime/lora.py)
    lora_patches: tuple = ()


@dataclass
class Vae:
    vae: Any  # diffusers AutoencoderKL
    family: Family

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


@dataclass
class ControlNet:
    model: Any  # diffusers ControlNetModel
    family: Family
    name: str = ""


@dataclass
class ControlHint:
    """A ControlNet applied to a conditioning: image [B,H,W,C] 0..1, strength, active step range."""

    control_net: ControlNet
    image: Any
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    # ComfyUI's control_apply_to_uncond (ControlNetApply): negatives with no hints of their own get this one
    apply_to_uncond: bool = False


@dataclass
class Cond:
    """One entry of a CONDITIONING list: token embeddings [1, 77*k, D] and what goes with them."""

    embeds: Any
    pooled: Any = None  # SDXL pooled text embedding [1, 1280]
    controls: list[ControlHint] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # e.g. SDXL size conditioning, aesthetic score


# CONDITIONING is a list[Cond] (ComfyUI's list of [tensor, dict], with the dict made explicit).
