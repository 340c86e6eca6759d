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


@dataclass
class ServerContext:
    queue: JobQueue
    hub: EventHub
    folders: Folders
    registry: Mapping[str, type[Node]]
    data_dir: Path  # the job database, saved workflows, user settings
    max_upload_bytes: int = 50 * 2**20
    max_pixels: int = 2048 * 2048  # width x height x batch a single API request may ask for
