"""LoRA loader nodes, with ComfyUI's names, inputs and outputs."""
from __future__ import annotations

from .. import folders
from ..declare import Combo, Float, Input, Node, Output
from ..runtime import lora
from .loaders import model_file_signature


def _lora_names() -> list[str]:
    return folders.current().list("loras")


def _strength(name: str, tooltip: str) -> Float:
    return Float(name, default=1.0, min=-100.0, max=100.0, step=0.01, tooltip=tooltip)


def _read(lora_name: str) -> lora.LoraFile:
    return lora.read_lora(folders.current().find("loras", lora_name))



class LoraLoader(Node):
    """Applies a LoRA to a diffusion model and its CLIP. The LoRA's weights are added only while the
    returned model samples and the returned CLIP encodes; the loaded model itself is never changed."""

    inputs = (Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
              Input("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
              Combo("lora_name", choices=_lora_names, tooltip="The name of the LoRA."),
              _strength("strength_model", "How strongly to modify the diffusion model. This value can be negative."),
              _strength("strength_clip", "How strongly to modify the CLIP model. This value can be negative."))
    outputs = (Output("MODEL", tooltip="The modified diffusion model."),
               Output("CLIP", tooltip="The modified CLIP model."))
    category = "loaders"
    display_name = "Load LoRA"

    @classmethod
    def fingerprint(cls, lora_name: str, **_):
        return model_file_signature("loras", lora_name)

    def run(self, model, clip, lora_name: str, strength_model: float, strength_clip: float):
        return lora.with_lora(model, clip, _read(lora_name), strength_model, strength_clip)


class LoraLoaderModelOnly(Node):
    """Applies a LoRA to a diffusion model only."""

    inputs = (Input("model", "MODEL"),
              Combo("lora_name", choices=_lora_names),
              Float("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01))
    outputs = (Output("MODEL"),)
    category = "loaders"
    display_name = "LoraLoaderModelOnly"

    @classmethod
    def fingerprint(cls, lora_name: str, **_):
        return model_file_signature("loras", lora_name)

    def run(self, model, lora_name: str, strength_model: float):
        return (lora.with_lora(model, None, _read(lora_name), strength_model, 0.0)[0],)


NODES = {"LoraLoader": LoraLoader, "LoraLoaderModelOnly": LoraLoaderModelOnly}
