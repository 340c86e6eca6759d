"""Where models run and in what precision, and which attention kernel they use."""
from __future__ import annotations

import importlib.util

import torch


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """fp16 on GPUs (CUDA and Apple MPS both run SD in half precision); fp32 on the CPU, where fp16
    kernels are slow or missing."""
    device = torch.device(device) if device is not None else default_device()
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def vae_dtype(dtype: torch.dtype, force_upcast: bool) -> torch.dtype:
    """VAEs whose config asks for it (SDXL's) overflow to NaN in fp16, so they stay in fp32."""
    return torch.float32 if force_upcast and dtype == torch.float16 else dtype


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def set_attention(model: torch.nn.Module) -> str:
    """xformers when it is installed and the model is on CUDA, else torch SDPA (diffusers' default).
    Returns the name of the kernel chosen."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    if not model.attn_processors:
        return "none"
    on_cuda = next(model.parameters()).device.type == "cuda"
    if on_cuda and xformers_available():
        model.enable_xformers_memory_efficient_attention()
        return "xformers"
    model.set_attn_processor(AttnProcessor2_0())
    return "sdpa"
