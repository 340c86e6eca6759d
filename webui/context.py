"""What every door of the server (tabs, ComfyUI API, A1111 API, graph editor) shares: one queue, one
event hub, the model and image folders, the node registry, and the limits on what a request may ask."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..nodes.declare import Node
    from ..nodes.folders import Folders
    from .events import EventHub
    from .jobs import JobQueue
    from .model_download_api import Downloads
    from .workers.ray_worker import RayWorkers


@dataclass
class ServerContext:
    queue: JobQueue
    hub: EventHub
    folders: Folders
    registry: Mapping[str, type[Node]]
    data_dir: Path  # the job database, saved workflows, user settings
    max_upload_bytes: int = 50 * 2**20
    max_pixels: int = 2048 * 2048  # width x height x batch a single API request may ask for
    preview_method: str = "none"  # --preview-method: ComfyUI clients' sampler previews (preview_method.py)
    downloads: Downloads | None = None  # model downloads the server runs (model_download_api.py)
    ray_workers: RayWorkers | None = None  # with --workers ray: the Ray runtime and its workers


def oversized_nodes(workflow: Mapping, max_pixels: int) -> dict[str, dict]:
    """Node errors, in ComfyUI's shape, for nodes asking for more than `max_pixels` (width x height x
    batch) -- a single request must not be able to exhaust the machine."""
    errors: dict[str, dict] = {}
    for node_id, node in workflow.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        width, height, batch = inputs.get("width"), inputs.get("height"), inputs.get("batch_size", 1)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (width, height, batch)):
            continue
        pixels = width * height * max(batch, 1)
        if pixels > max_pixels:
            message = f"width x height x batch_size = {pixels:.0f} is more than this server allows ({max_pixels})"
            errors[str(node_id)] = {
                "errors": [{"type": "value_bigger_than_max", "message": message, "details": message,
                            "extra_info": {"input_name": "width", "received_value": width}}],
                "dependent_outputs": [], "class_type": node.get("class_type")}
    return errors
