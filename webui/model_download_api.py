"""Model downloads started from the server: POST /api/models/download, GET /api/models/downloads, and a
`download_progress` event on /ws for each step of each download.

Downloads run in background threads, at most MAX_RUNNING at a time (the others wait, "queued"); a
request for a file that is already being downloaded (same URL, or same destination) is refused with 409.
"""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from .context import ServerContext
from .json_errors import RefusalsAsJSON, Refused
from .model_downloads import (SHA256_HEX, AlreadyThere, DownloadError, DownloadProgress, DownloadRefused, destination,
                              download, folder_kind, name_from_url, resolve_source)

MAX_RUNNING = 2
MAX_KEPT = 50  # finished downloads still listed


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str  # a URL or a Hugging Face OWNER/REPO/FILE
    folder: str | None = None
    name: str | None = None
    sha256: str | None = None


class Downloads:
    """The server's downloads: started, listed, and published on the event hub as they progress."""

    def __init__(self, ctx: ServerContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_RUNNING)
        self._entries: dict[str, dict] = {}  # id -> the download's latest progress
        self._claimed: dict[Path, str] = {}  # destination -> id, while queued or running
        self._urls: dict[str, str] = {}  # url -> id, while queued or running

    def list(self) -> list[dict]:
        with self._lock:
            return [dict(entry) for entry in self._entries.values()]

    def start(self, req: DownloadRequest) -> dict:
        download_id = uuid.uuid4().hex
        url = resolve_source(req.source)
        with self._lock:
            if url in self._urls:
                raise AlreadyThere(f"{url} is already being downloaded")
            self._urls[url] = download_id
            queued = DownloadProgress(url, req.folder or "", req.name, status="queued")
            self._entries[download_id] = {"id": download_id, **queued.as_dict()}
            self._forget_old()
        claims: list[Path] = []

        def claim(target: Path) -> None:
            with self._lock:
                if self._claimed.get(target, download_id) != download_id:
                    raise AlreadyThere(f"{target.parent.name}/{target.name} is already being downloaded")
                if target not in self._claimed:
                    self._claimed[target] = download_id
                    claims.append(target)

        def publish(progress: DownloadProgress) -> None:
            with self._lock:
                entry = {**self._entries[download_id], **progress.as_dict()}
                self._entries[download_id] = entry
            self.ctx.hub.publish("download_progress", dict(entry), None)

        def run() -> None:
            try:
                with self._slots:
                    download(req.source, self.ctx.folders, req.folder, name=req.name, sha256=req.sha256,
                             on_progress=publish, claim=claim)
            except DownloadError as exc:
                if self._entries[download_id]["status"] != "failed":  # refused before download() reported
                    publish(DownloadProgress(url, req.folder or "", req.name, status="failed", error=str(exc)))
            except Exception as exc:  # noqa: BLE001 -- the thread must not die silently
                publish(DownloadProgress(url, req.folder or "", req.name, status="failed", error=repr(exc)))
            finally:
                self._release(download_id, url, claims)

        # The destination, when it is known before any byte is fetched, is claimed now: a second request
        # for the same file is refused by this call, not later in its thread.
        try:
            if req.sha256 is not None and not SHA256_HEX.match(req.sha256.strip().lower()):
                raise DownloadRefused(f"sha256 {req.sha256!r} is not 64 hex digits")
            if req.folder:
                folder_kind(req.folder)
            if name := req.name or name_from_url(url):
                claim(destination(self.ctx.folders, req.folder, name, "name")[1])
        except DownloadRefused:
            self._release(download_id, url, claims, forget=True)
            raise
        thread = threading.Thread(target=run, name=f"download-{download_id[:8]}", daemon=True)
        thread.start()
        return {"id": download_id, "url": url}

    def _release(self, download_id: str, url: str, claims: list[Path], forget: bool = False) -> None:
        with self._lock:
            self._urls.pop(url, None)
            for target in claims:
                self._claimed.pop(target, None)
            if forget:
                self._entries.pop(download_id, None)

    def _forget_old(self) -> None:
        finished = [k for k, e in self._entries.items() if e["status"] in ("done", "failed")]
        for key in finished[:max(0, len(self._entries) - MAX_KEPT)]:
            del self._entries[key]


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter(route_class=RefusalsAsJSON)
    downloads = ctx.downloads or Downloads(ctx)

    @api.post("/api/models/download")
    def start_download(req: DownloadRequest):
        try:
            return downloads.start(req)
        except DownloadRefused as exc:
            raise Refused(409 if isinstance(exc, AlreadyThere) else 400, str(exc)) from None

    @api.get("/api/models/downloads")
    def list_downloads():
        return downloads.list()

    return api
