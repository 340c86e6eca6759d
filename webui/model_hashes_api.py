"""GET /api/models/hashes: the background hasher's progress (file_hashes.Hasher.progress) and the hashes
known so far of the files in the folders it hashes; and the `hash_progress` event on /ws as it reads
(at most every PUBLISH_EVERY_BYTES of a file, and when a file is done)."""
from __future__ import annotations

from fastapi import APIRouter

from ..nodes.formats import file_hashes
from .context import ServerContext

PUBLISH_EVERY_BYTES = 64 * 2**20


def known_hashes(ctx: ServerContext) -> list[dict]:
    """Each file of the hashed folders with its A1111 short hash and full digest, None where not known
    yet (never reads a file)."""
    hasher, listed = file_hashes.current(), []
    for folder, kind in file_hashes.HASHED_FOLDERS.items():
        for name in ctx.folders.list(folder):
            try:
                digest = hasher.known(ctx.folders.find(folder, name), kind)
            except (OSError, ValueError):
                continue
            short = digest[:file_hashes.SHORT_LENGTH[kind]] if digest else None
            listed.append({"folder": folder, "name": name, "kind": kind, "hash": short, "digest": digest})
    return listed


def publisher(ctx: ServerContext) -> file_hashes.ChunkHook:
    """A chunk hook that publishes the hasher's progress on the event hub, now and then."""
    def publish(path: str, done: int, total: int) -> None:
        if done >= total or done % PUBLISH_EVERY_BYTES < file_hashes.CHUNK_BYTES:
            ctx.hub.publish("hash_progress", file_hashes.current().progress(), None)

    return publish


def router(ctx: ServerContext) -> APIRouter:
    routes = APIRouter()

    @routes.get("/api/models/hashes")
    def hashes():
        return {"progress": file_hashes.current().progress(), "files": known_hashes(ctx)}

    return routes
