"""Where models run and in what precision, which attention kernel they use, and how much device
memory is free.

Precision (`--precision`): "auto" runs UNet and text encoders in fp16 on GPUs and fp32 on the CPU, and
the VAE in bf16 on CUDA devices that support it (as ComfyUI), else like the rest; "fp16", "bf16" and
"fp32" force one dtype. A VAE that overflows in half precision is moved to `half_fallback_dtype()`
by vae_codec, and `vae_dtype` gives that dtype to every VAE loaded afterwards (A1111's behaviour).
"""
from __future__ import annotations

import gc
import importlib.util
import os

import torch

from ..device_choices import PRECISIONS

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_precision = "auto"
_vae_upcast: torch.dtype | None = None  # set once a half-precision VAE produced NaN/inf


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_precision(name: str) -> None:
    """`--precision auto|fp16|bf16|fp32`; applies to models loaded from now on."""
    global _precision
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    _precision = name


def precision() -> str:
    return _precision


def default_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """The --precision's dtype; "auto": fp16 on GPUs (CUDA and Apple MPS both run SD in half
    precision), fp32 on the CPU, where fp16 kernels are slow or missing."""
    if _precision != "auto":
        return _DTYPES[_precision]
    device = torch.device(device) if device is not None else default_device()
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def bf16_supported(device: torch.device | str | None = None) -> bool:
    device = torch.device(device) if device is not None else default_device()
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def half_fallback_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """Where a VAE goes when fp16 overflows: bf16 (fp32's range) where the device supports it, else fp32."""
    return torch.bfloat16 if bf16_supported(device) else torch.float32


def vae_dtype(dtype: torch.dtype, force_upcast: bool, device: torch.device | str | None = None) -> torch.dtype:
    """The VAE's dtype when the other models load in `dtype`. fp16 VAEs that are known to overflow
    (config `force_upcast`, SDXL's), or once any VAE overflowed in this process, get the fallback;
    "auto" on CUDA with bf16 uses bf16 (ComfyUI's choice: no overflow, half the memory of fp32)."""
    if dtype != torch.float16:
        return dtype
    if _vae_upcast is not None:
        return _vae_upcast
    if force_upcast or (_precision == "auto" and bf16_supported(device)):
        return half_fallback_dtype(device)
    return dtype


def remember_vae_upcast(dtype: torch.dtype) -> bool:
    """From now on VAEs load in `dtype`; True the first time (the caller logs it once)."""
    global _vae_upcast
    first = _vae_upcast is None
    _vae_upcast = dtype
    return first


def free_memory(device: torch.device | str) -> int:
    """Bytes a computation on `device` can still allocate: CUDA's free memory plus what torch's
    allocator holds unused; on the CPU, the available RAM. The one place memory is measured, so a
    memory manager (or a test) can replace it with a budget of its own."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        available = free + torch.cuda.memory_reserved(device) - allocated
        # a cap set with torch.cuda.set_per_process_memory_fraction binds before the card is full
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _: 1.0)(device)
        capped = int(total * fraction) - allocated
        return max(0, min(available, capped))
    if device.type == "mps":
        return max(0, torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        import psutil
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return psutil.virtual_memory().available


def free_cached_memory() -> None:
    """Give back what dropped tensors still hold (after an out-of-memory error, before retrying):
    Python garbage first, then the device allocator's cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def set_memory_format(model: torch.nn.Module) -> None:
    """channels_last for models on CUDA: cuDNN's tensor-core convolutions work in NHWC, so the UNet's
    and VAE's convolutions skip a transpose each. Moving the model later keeps the layout. On other
    devices the default layout is as fast or faster."""
    on_cuda = any(p.device.type == "cuda" for p in model.parameters())
    if on_cuda or default_device().type == "cuda":
        model.to(memory_format=torch.channels_last)


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
