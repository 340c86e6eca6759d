"""All node classes by their workflow name (ComfyUI's class_type)."""
from __future__ import annotations

import importlib

from .declare import Node

# Modules under nodes/core; each exports NODES = {class_type: NodeClass}.
CORE_MODULES = ("loaders", "lora", "conditioning", "latent", "sampling", "vae", "image", "controlnet",
                "preprocessors", "conditioning_ops", "latent_ops", "image_ops", "masks", "latent_files",
                "model_merge", "hypernetwork", "websocket_output", "upscale",
                "custom_sampling")


def core_nodes() -> dict[str, type[Node]]:
    registry: dict[str, type[Node]] = {}
    for module_name in CORE_MODULES:
        module = importlib.import_module(f"{__package__}.core.{module_name}")
        for name, cls in module.NODES.items():
            if name in registry:
                raise RuntimeError(f"node {name} is defined twice")
            registry[name] = cls
    return registry


def object_info(registry: dict[str, type[Node]]) -> dict:
    """ComfyUI's GET /object_info for every node."""
    return {name: cls.object_info(name) for name, cls in registry.items()}
