"""A1111's model hashes, computed once per file and kept: the one place that hashes model files.

Two kinds, as A1111 computes them:
- "sha256": the whole file's sha256. Its first 10 hex digits are A1111's "Model hash", "VAE hash",
  "TI hashes" and the "[hash]" of a checkpoint's title.
- "addnet": a LoRA's hash for "Lora hashes" (12 digits): kohya's sha256 of a .safetensors file's tensor
  data (the header and its metadata left out), or a `sshs_model_hash` recorded in that metadata, or the
  whole file's sha256 for a pickle.

Digests are kept in a JSON file (the server's data folder, CACHE_FILE) keyed by the resolved path and
its (size, mtime_ns) signature, so a restart does not hash again and a changed file is hashed anew.
A background thread hashes what is queued (every checkpoint, VAE, LoRA and embedding at start-up and
on refresh, smallest first), reading 1 MiB at a time so its progress is known. Callers ask with
`short_hash` (known value or None, and the file is queued) or `wait_for` (hashed now if need be).
No torch here: the web layer reads these without loading models.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SHA256 = "sha256"
ADDNET = "addnet"
SHORT_LENGTH = {SHA256: 10, ADDNET: 12}
CHUNK_BYTES = 1 << 20
CACHE_FILE = "hashes.json"
HASH_ON_LISTING_BYTES = 256 * 2**20  # listings hash files up to this size on the spot; larger ones in the background
# The folders the server hashes in the background, and the kind of hash A1111 reports for each.
HASHED_FOLDERS = {"checkpoints": SHA256, "vae": SHA256, "embeddings": SHA256, "loras": ADDNET}

ChunkHook = Callable[[str, int, int], None]  # (resolved path, bytes done, bytes total), after each chunk read


def file_signature(path: str | Path) -> tuple:
    """(resolved path, mtime in ns, size); a folder (diffusers model) counts its newest entry."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    if resolved.is_dir():
        stats = [stat] + [Path(root, name).stat() for root, _, names in os.walk(resolved) for name in names]
        return str(resolved), max(s.st_mtime_ns for s in stats), sum(s.st_size for s in stats)
    return str(resolved), stat.st_mtime_ns, stat.st_size


def digest(path: str | Path, kind: str = SHA256, on_chunk: Callable[[int], None] | None = None) -> str:
    """The full hex digest of one kind, read in CHUNK_BYTES chunks; `on_chunk(bytes so far)` after each."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        start = 0
        if kind == ADDNET and str(path).lower().endswith(".safetensors"):
            header_length = int.from_bytes(file.read(8), "little")
            if header_length <= size - 8:
                try:
                    header = json.loads(file.read(header_length))
                    recorded = (header.get("__metadata__") or {}).get("sshs_model_hash")
                    if recorded:
                        return str(recorded)
                except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                    pass
                start = 8 + header_length
        file.seek(start)
        hasher = hashlib.sha256()
        done = start
        for block in iter(lambda: file.read(CHUNK_BYTES), b""):
            hasher.update(block)
            done += len(block)
            if on_chunk is not None:
                on_chunk(done)
    return hasher.hexdigest()


class HashCache:
    """Digests by resolved path, valid while the file keeps its (size, mtime_ns); saved to `file` (JSON)
    after each new digest, or kept in memory only when `file` is None."""

    def __init__(self, file: str | Path | None = None):
        self.file = Path(file) if file is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = self._load()

    def _load(self) -> dict[str, dict]:
        if self.file is None or not self.file.is_file():
            return {}
        try:
            files = json.loads(self.file.read_text()).get("files")
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("hash cache %s not read (%s): files will be hashed again", self.file, exc)
            return {}
        if not isinstance(files, dict):
            return {}
        return {path: entry for path, entry in files.items() if isinstance(entry, dict)}

    def get(self, path: str, size: int, mtime_ns: int, kind: str) -> str | None:
        with self._lock:
            entry = self._entries.get(path)
        if entry and entry.get("size") == size and entry.get("mtime_ns") == mtime_ns:
            return entry.get(kind)
        return None

    def put(self, path: str, size: int, mtime_ns: int, kind: str, value: str) -> None:
        with self._lock:
            entry = self._entries.get(path)
            if not entry or entry.get("size") != size or entry.get("mtime_ns") != mtime_ns:
                entry = self._entries[path] = {"size": size, "mtime_ns": mtime_ns}  # the file changed: old digests go
            entry[kind] = value
            if self.file is not None:
                from ..folders import write_atomically

                self.file.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(self.file, json.dumps({"version": 1, "files": self._entries}, indent=1).encode())


@dataclass
class FileProgress:
    path: str
    kind: str
    done: int
    total: int


class Hasher:
    """Hashes files once (HashCache) on a background thread fed by a queue, or on the caller's thread when
    it can't wait (`wait_for`); never the same file and kind twice at once. `on_chunk` is called on the
    hashing thread after each chunk (progress listeners, tests)."""

    def __init__(self, cache_file: str | Path | None = None, on_chunk: ChunkHook | None = None):
        self.cache = HashCache(cache_file)
        self.on_chunk = on_chunk
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, str, int]] = deque()  # (resolved path, kind, size when queued)
        self._running: dict[tuple[str, str], FileProgress] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        # the work queued since the queue was last empty, for the overall progress
        self._batch = {"files_done": 0, "files_total": 0, "bytes_done": 0, "bytes_total": 0}

    # -- answers -------------------------------------------------------------------------------------------
    def known(self, path: str | Path, kind: str = SHA256) -> str | None:
        """The full digest if the file as it is now was hashed; None otherwise (never reads the file)."""
        signature = _signature(path)
        return self.cache.get(*signature, kind) if signature else None

    def short_hash(self, path: str | Path, kind: str = SHA256) -> str | None:
        """A1111's short hash if known; None otherwise, and the file is queued for the background thread."""
        found = self.known(path, kind)
        if found is None:
            self.enqueue([path], kind)
            return None
        return found[:SHORT_LENGTH[kind]]

    def wait_for(self, path: str | Path, kind: str = SHA256) -> str:
        """A1111's short hash, hashing the file now (or waiting for the thread already hashing it).
        OSError for a file that can't be read; ValueError for a folder."""
        return self.wait_for_digest(path, kind)[:SHORT_LENGTH[kind]]

    def wait_for_digest(self, path: str | Path, kind: str = SHA256) -> str:
        signature = _signature(path)
        if signature is None:
            raise ValueError(f"{path} is a folder, not a model file: it has no A1111 hash")
        found = self._claim_or_get(signature, kind)
        return found if found is not None else self._hash(signature, kind)

    def for_listing(self, path: str | Path, kind: str = SHA256) -> str | None:
        """The short hash a listing shows: hashed on the spot up to HASH_ON_LISTING_BYTES, else known or
        queued (None until the background thread gets to it)."""
        try:
            if Path(path).is_file() and Path(path).stat().st_size <= HASH_ON_LISTING_BYTES:
                return self.wait_for(path, kind)
            return self.short_hash(path, kind)
        except (OSError, ValueError):
            return None

    def progress(self) -> dict:
        """What the background hashing is doing: the files being read (bytes done of total), how many
        wait, and the totals since the queue was last empty."""
        with self._cond:
            return {"hashing": [{**asdict(p), "name": Path(p.path).name} for p in self._running.values()],
                    "queued": len(self._queue), **self._batch}

    # -- the queue -------------------------------------------------------------------------------------
    def enqueue(self, paths: Iterable[str | Path], kind: str = SHA256) -> int:
        """Queue files (smallest first) whose digest isn't known; folders and missing files are skipped.
        Starts the background thread if it isn't running. How many were queued."""
        wanted = []
        for path in paths:
            try:
                signature = _signature(path)
            except OSError:
                continue
            if signature is not None and self.cache.get(*signature, kind) is None:
                wanted.append(signature)
        added = 0
        with self._cond:
            queued = {(path, queued_kind) for path, queued_kind, _ in self._queue}
            for resolved, size, _ in sorted(wanted, key=lambda s: s[1]):
                if (resolved, kind) not in queued and (resolved, kind) not in self._running:
                    queued.add((resolved, kind))
                    self._queue.append((resolved, kind, size))
                    self._batch["files_total"] += 1
                    self._batch["bytes_total"] += size
                    added += 1
            if added:
                self._start_locked()
                self._cond.notify_all()
        return added

    def enqueue_folders(self, folders) -> int:
        """Queue every file in the folders A1111 reports hashes of (HASHED_FOLDERS)."""
        added = 0
        for folder, kind in HASHED_FOLDERS.items():
            paths = []
            for name in folders.list(folder):
                try:
                    paths.append(folders.find(folder, name))
                except (OSError, ValueError):
                    continue
            added += self.enqueue(paths, kind)
        return added

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread after the file it is reading (a later enqueue starts it again)."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _start_locked(self) -> None:
        self._stopping = False  # a thread told to stop but still reading goes on instead
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="model-hasher", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._reset_batch_locked()
                    self._cond.wait()
                if self._stopping:
                    self._thread = None
                    return
                path, kind, size = self._queue.popleft()
            counted = False  # its bytes reported by _hash
            try:
                signature = _signature(path)
                if signature is not None and self._claim_or_get(signature, kind, wait=False) is None:
                    counted = True
                    self._hash(signature, kind, counted=True)
            except OSError as exc:  # removed or unreadable since it was queued: the next listing queues it again
                log.info("not hashed: %s (%s)", path, exc)
            with self._cond:
                self._batch["files_done"] += 1
                if not counted:  # hashed meanwhile by a caller that couldn't wait, or gone
                    self._batch["bytes_done"] += size

    def _reset_batch_locked(self) -> None:
        if not self._running:
            self._batch = dict.fromkeys(self._batch, 0)

    # -- hashing one file ------------------------------------------------------------------------------
    def _claim_or_get(self, signature: tuple[str, int, int], kind: str, wait: bool = True) -> str | None:
        """The cached digest, or None once this thread has claimed the file to hash it. Without `wait`, a
        file another thread is hashing counts as done ("" is returned)."""
        key = (signature[0], kind)
        with self._cond:
            while True:
                found = self.cache.get(*signature, kind)
                if found is not None:
                    return found
                if key not in self._running:
                    self._running[key] = FileProgress(signature[0], kind, 0, signature[1])
                    return None
                if not wait:
                    return ""
                self._cond.wait()

    def _hash(self, signature: tuple[str, int, int], kind: str, counted: bool = False) -> str:
        path, size, mtime_ns = signature
        key = (path, kind)

        def chunk_read(done: int) -> None:
            with self._cond:
                previous, self._running[key].done = self._running[key].done, done
                if counted:
                    self._batch["bytes_done"] += done - previous
            if self.on_chunk is not None:
                self.on_chunk(path, done, size)

        try:
            value = digest(path, kind, chunk_read)
            self.cache.put(path, size, mtime_ns, kind, value)
            return value
        finally:
            with self._cond:
                progress = self._running.pop(key)
                if counted:  # what wasn't read (a LoRA's recorded hash; a file cut short) counts as done
                    self._batch["bytes_done"] += size - progress.done
                self._cond.notify_all()


def _signature(path: str | Path) -> tuple[str, int, int] | None:
    """(resolved path, size, mtime_ns) of a file; None for a folder. OSError for a missing file."""
    if Path(path).is_dir():
        return None
    resolved, mtime_ns, size = file_signature(path)
    return resolved, size, mtime_ns


_current = Hasher()  # in memory until the server points it at its data folder


def current() -> Hasher:
    """The hasher of this process (the server's, with its cache file, once `configure` ran)."""
    return _current


def configure(cache_file: str | Path | None, on_chunk: ChunkHook | None = None) -> Hasher:
    """A new process-wide hasher keeping its digests in `cache_file`; the previous one's thread stops."""
    global _current
    _current.stop()
    _current = Hasher(cache_file, on_chunk)
    return _current
