"""Loading checkpoints, VAEs and ControlNets offline into MODEL / CLIP / VAE / CONTROL_NET values.

Single files (original layout) are renamed with diffusers' converters, and their configs are the
family's shipped config fitted to the tensors (model_configs). Components are built on the meta
device and take the file's tensors as their parameters (`assign=True`), so weights are held once:
tensors are read one component at a time, already cast to the target dtype.

Weights under a component's prefix that the component does not use (SD2's last OpenCLIP block and
text projection, CLIP-L's position_ids, ...) stay on the module as `checkpoint_extras`, so that
save_checkpoint writes the file back as it was.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (convert_controlnet_checkpoint, convert_ldm_clip_checkpoint,
                                                 convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                 convert_open_clip_checkpoint)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from . import devices
from .ldm_keys import TEXT_ENCODERS, clip_l_to_ldm, controlnet_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm
from .model_configs import (clip_config, controlnet_config, controlnet_folder, family_folder, indices,
                            ldm_conversion_config, read_config, recorded_configs, unet_config, vae_config)
from .model_detect import (CONTROLNET, KIND_BY_IN_CHANNELS, UNET, VAE, UnknownModel, detect_controlnet,
                           detect_family, is_controlnet, is_v_prediction, prediction_hint, zero_terminal_snr)
from .model_types import SD1, SD2, SDXL, SDXL_REFINER, ControlNet, DiffusionModel, Family, TextEncoder, Vae
from .state_dict_files import CheckpointError, StateDict, open_state_dict
from .tokenizers import clip_tokenizer

EXTRAS = "checkpoint_extras"
DIFFERENCE_KEY = "difference"  # marks a ControlNet stored as its change from the base model


def load_checkpoint(path: str | Path, device=None, dtype: torch.dtype | None = None
                    ) -> tuple[DiffusionModel, TextEncoder, Vae]:
    """A full SD1 / SD2 / SDXL checkpoint: a single file, or a diffusers folder (model_index.json)."""
    path = Path(path)
    device, dtype = _placement(device, dtype)
    if path.is_dir():
        return _load_diffusers_folder(path, device, dtype)
    sd = open_state_dict(path)
    try:
        family = detect_family(sd)
    except UnknownModel as err:
        raise CheckpointError(f"{path.name}: not a Stable Diffusion checkpoint: {err}{_elsewhere(sd)}") from err
    hint = prediction_hint(sd, sd.metadata, path)
    family.prediction_type = hint or "epsilon"
    recorded = recorded_configs(sd.metadata)
    sd.dtype = dtype
    with _reading(path, "text encoder"):
        encoders = [_text_encoder(sd, family, prefix, layout, name, recorded, device)
                    for prefix, layout, name in TEXT_ENCODERS[family.name]]
    with _reading(path, "UNet"):
        pooled = encoders[-1].config.projection_dim if family.is_xl else None
        unet = _unet(sd, family, recorded, device, pooled)
    if hint is None and family.name == SD2 and family.kind == "base" and is_v_prediction(unet):
        family.prediction_type = "v_prediction"
    with _reading(path, "VAE"):
        vae = _vae(sd, VAE, recorded.get("vae") or read_config(family_folder(family), "vae"), device, dtype)
    scheduler = _scheduler_config(read_config(family_folder(family), "scheduler"), family, zero_terminal_snr(sd))
    return (DiffusionModel(unet, family, scheduler, name=path.stem),
            TextEncoder(_tokenizers(family), encoders, family), Vae(vae, family))


def load_vae(path: str | Path, device=None, dtype: torch.dtype | None = None, family: Family | None = None) -> Vae:
    """A standalone VAE (original or diffusers keys, or a diffusers folder). SD and SDXL VAEs have the
    same shapes, so without `family` the name decides: "xl" in it means SDXL (scaling 0.13025)."""
    path = Path(path)
    device, dtype = _placement(device, dtype)
    family = family or Family(SDXL if "xl" in path.stem.lower() else SD1)
    if path.is_dir():
        with _reading(path, "VAE"):
            config = AutoencoderKL.load_config(path)
            vae_dtype = devices.vae_dtype(dtype, config.get("force_upcast", False), device)
            vae = AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=vae_dtype)
        return Vae(_place(_owned(vae, device), device), family)
    sd = open_state_dict(path)
    prefix = next((p for p in (VAE, "vae.") if any(k.startswith(p) for k in sd)), "")
    if prefix + "encoder.conv_in.weight" not in sd or prefix + "decoder.conv_out.weight" not in sd:
        raise CheckpointError(f"{path.name}: not a VAE (no encoder/decoder weights){_elsewhere(sd)}")
    base = recorded_configs(sd.metadata).get("vae") or read_config(family_folder(family), "vae")
    with _reading(path, "VAE"):
        return Vae(_vae(sd, prefix, base, device, dtype), family)


def load_controlnet(path: str | Path, device=None, dtype: torch.dtype | None = None,
                    base: DiffusionModel | None = None) -> ControlNet:
    """An SD1 / SD2 / SDXL ControlNet: original (`control_model.*` or bare) or diffusers keys, or a folder.

    A "difference" ControlNet (a file with a `difference` key: its weights are the change from the
    model it was trained on) needs that model as `base` (ComfyUI's DiffControlNetLoader): the
    base UNet's weights are added to every ControlNet weight of the same name and shape."""
    path = Path(path)
    device, dtype = _placement(device, dtype)
    if path.is_dir():
        with _reading(path, "ControlNet"):
            model = ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
        return ControlNet(_place(_owned(model, device), device), detect_controlnet(model.state_dict()), name=path.name)
    sd = open_state_dict(path)
    if not is_controlnet(sd):
        raise CheckpointError(f"{path.name}: not a ControlNet (no input_hint_block / controlnet_cond_embedding)"
                              f"{_elsewhere(sd)}")
    if "lora_controlnet" in sd:
        raise CheckpointError(f"{path.name}: a Control-LoRA (low-rank ControlNet), which Inkwash does not load; "
                              "use a full ControlNet")
    family = detect_controlnet(sd)
    difference = DIFFERENCE_KEY in sd
    if difference and base is None:
        raise CheckpointError(f"{path.name}: a difference ControlNet (weights relative to its base model): "
                              "load it with DiffControlNetLoader and the model it was made for")
    if difference and base.family.name != family.name:
        raise CheckpointError(f"{path.name}: a difference ControlNet for {family.name} models, and the model is "
                              f"{base.family.name}: it was made for another model family")
    sd.dtype = dtype
    recorded = recorded_configs(sd.metadata).get("controlnet")
    with _reading(path, "ControlNet"):
        diffusers_layout = "controlnet_cond_embedding.conv_in.weight" in sd
        if diffusers_layout:
            prefix, view, weights = "", sd, dict(sd)
        else:
            prefix = CONTROLNET if any(k.startswith(CONTROLNET) for k in sd) else ""
            view = sd.subset(prefix)
            weights = convert_controlnet_checkpoint(view, ldm_conversion_config(view, prefix))
            weights.update(_size_embedding(view, prefix))
        config = controlnet_config(weights, recorded or read_config(controlnet_folder(family)), family,
                                   exact=recorded is not None)
        model = _build(lambda: ControlNetModel.from_config(config))
        names = model.state_dict() if diffusers_layout else controlnet_to_ldm(model.state_dict(), model.config)
        _fill(model, weights, view, {prefix + k for k in names} | {DIFFERENCE_KEY}, prefix)
        if difference:
            _add_base_weights(model, base, path.name)
    return ControlNet(_place(model, device), family, name=path.stem)


def _size_embedding(view: StateDict, prefix: str) -> dict:
    """SDXL's size embedding (`label_emb`), which diffusers' ControlNet converter leaves out."""
    names = {"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}
    return {new + end: view[prefix + old + end] for new, old in names.items() for end in ("weight", "bias")
            if prefix + old + end in view}


def _add_base_weights(model: ControlNetModel, base: DiffusionModel, name: str) -> None:
    unet = dict(base.unet.named_parameters())
    added = 0
    with torch.no_grad():
        for key, param in model.named_parameters():
            weight = unet.get(key)
            if weight is not None and weight.shape == param.shape:
                param.add_(weight.to(param.device, param.dtype))
                added += 1
    if added == 0:
        raise CheckpointError(f"{name}: no weight of this difference ControlNet matches the model "
                              f"({base.family.name}): it was made for another model family")


def _unet(sd: StateDict, family: Family, recorded: dict, device, pooled_dim: int | None):
    view = sd.subset(UNET)
    weights = convert_ldm_unet_checkpoint(view, ldm_conversion_config(view, UNET))
    base = recorded.get("unet") or read_config(family_folder(family), "unet")
    config = unet_config(weights, base, family, "unet" in recorded, pooled_dim)
    unet = _build(lambda: UNet2DConditionModel.from_config(config))
    _fill(unet, weights, view, {UNET + k for k in unet_to_ldm(unet.state_dict(), unet.config)}, UNET)
    return _place(unet, device)


def _text_encoder(sd: StateDict, family: Family, prefix: str, layout: str, name: str, recorded: dict, device):
    view = sd.subset(prefix)
    open_clip = layout == "open_clip"
    base = recorded.get(name) or read_config(family_folder(family), name)
    config = CLIPTextConfig.from_dict(clip_config(view, prefix, base, name in recorded, open_clip,
                                                  drop_last_layer=family.name == SD2))
    cls = CLIPTextModelWithProjection if open_clip and family.is_xl else CLIPTextModel
    model = _build(lambda: cls(config))
    used = {prefix + k for k in (open_clip_to_ldm if open_clip else clip_l_to_ldm)(model.state_dict())}
    feed = view.subset(keys=used)
    if open_clip:
        weights = convert_open_clip_checkpoint(model, feed, prefix=prefix)
    else:
        weights = convert_ldm_clip_checkpoint(feed)
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    _fill(model, weights, view, used, prefix)
    return model.to(device).eval()


def _vae(sd: StateDict, prefix: str, base: dict, device, dtype: torch.dtype):
    view = sd.subset(prefix)
    view.dtype = devices.vae_dtype(dtype, base.get("force_upcast", False), device)
    diffusers_layout = prefix + "encoder.down_blocks.0.resnets.0.conv1.weight" in view
    if diffusers_layout:
        weights = {k[len(prefix):]: view[k] for k in view}
    else:
        blocks = ["DownEncoderBlock2D"] * len(indices(view, prefix + "encoder.down."))
        weights = convert_ldm_vae_checkpoint(view, {"down_block_types": blocks, "up_block_types": blocks})
    config = vae_config(weights, base)
    vae = _build(lambda: AutoencoderKL.from_config(config))
    names = vae.state_dict() if diffusers_layout else vae_to_ldm(vae.state_dict(), vae.config)
    _fill(vae, weights, view, {prefix + k for k in names}, prefix)
    return _place(vae, device)


def _build(factory):
    """The module with parameters on the meta device (buffers real), ready for `assign=True`."""
    with init_empty_weights():
        return factory()


def _fill(model: torch.nn.Module, weights: dict, view: StateDict, used: set[str], prefix: str) -> None:
    """Make `weights` the model's parameters, after checking they are all there with the right
    shapes; keep the file's unused keys under `prefix` as the model's `checkpoint_extras`."""
    expected = model.state_dict()
    missing = [k for k in expected if weights.get(k) is None]
    wrong = [f"{k} {tuple(weights[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k not in missing and tuple(weights[k].shape) != tuple(v.shape)]
    if missing or wrong:
        raise ValueError(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})" if missing
                         else f"weights of the wrong shape: {', '.join(wrong[:3])}")
    model.load_state_dict({k: weights[k] for k in expected}, strict=True, assign=True)
    setattr(model, EXTRAS, {k[len(prefix):]: view[k] for k in view if k not in used})


def _place(model, device):
    model = model.to(device).eval()
    devices.set_attention(model)
    devices.set_memory_format(model)
    return model


def _owned(model, device):
    """diffusers and transformers leave CPU weights mapped from the file, unaligned; give them memory
    of their own, as single files get (moving to a GPU copies anyway)."""
    if device.type == "cpu":
        with torch.no_grad():
            for param in model.parameters():
                param.data = param.data.clone()
    return model


def _placement(device, dtype):
    device = torch.device(device) if device is not None else devices.default_device()
    return device, dtype or devices.default_dtype(device)


def _scheduler_config(config: dict, family: Family, zero_snr: bool) -> dict:
    config["prediction_type"] = family.prediction_type
    if zero_snr:
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return config


def _tokenizers(family: Family) -> list:
    return [clip_tokenizer(pad_with_zero=layout == "open_clip") for _, layout, _ in TEXT_ENCODERS[family.name]]


def _load_diffusers_folder(path: Path, device, dtype) -> tuple[DiffusionModel, TextEncoder, Vae]:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise CheckpointError(f"{path.name}: a folder without model_index.json, so not a diffusers model")
    index = json.loads(index_file.read_text())

    def present(name):
        return isinstance(index.get(name), list) and index[name][0] is not None and (path / name).is_dir()

    with _reading(path, "diffusers model"):
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, local_files_only=True)
        encoders = []
        if present("text_encoder"):
            encoders.append(CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype, local_files_only=True))
        if present("text_encoder_2"):
            encoders.append(CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2", dtype=dtype,
                                                                        local_files_only=True))
        upcast = AutoencoderKL.load_config(path, subfolder="vae").get("force_upcast", False)
        vae_dtype = devices.vae_dtype(dtype, upcast, device)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=vae_dtype, local_files_only=True)
    if not encoders:
        raise CheckpointError(f"{path.name}: no text encoder in this diffusers folder")
    if present("text_encoder_2"):
        name = SDXL if len(encoders) == 2 else SDXL_REFINER
    else:
        name = SD2 if encoders[0].config.hidden_act == "gelu" else SD1  # OpenCLIP uses gelu, CLIP-L quick_gelu
    family = Family(name, KIND_BY_IN_CHANNELS.get(unet.config.in_channels, "base"))
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    scheduler = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() \
        else read_config(family_folder(family), "scheduler")
    family.prediction_type = scheduler.get("prediction_type", "epsilon")
    return (DiffusionModel(_place(_owned(unet, device), device), family, scheduler, name=path.name),
            TextEncoder(_tokenizers(family), [_owned(e, device).to(device).eval() for e in encoders], family),
            Vae(_place(_owned(vae, device), device), family))


@contextmanager
def _reading(path: Path, what: str):
    """Turn whatever a damaged or unexpected file makes the converters raise into one clear error."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, ValueError, RuntimeError, StopIteration, IndexError, OSError, TypeError,
            AttributeError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{path.name}: could not load its {what}: {type(err).__name__}: {detail}") from err


def _elsewhere(sd: StateDict) -> str:
    """A hint when the file is a model of another kind."""
    if is_controlnet(sd):
        return " (it is a ControlNet: put it in models/controlnet)"
    if any(k.startswith(("encoder.down", "decoder.up")) for k in sd):
        return " (it is a VAE: put it in models/vae)"
    if any(k.startswith(UNET) for k in sd):
        return ""
    if any("lora" in k for k in list(sd)[:50]):
        return " (it is a LoRA: put it in models/loras)"
    return ""
