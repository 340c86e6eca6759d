"""Downloading a model file into a model folder, only when a user asks for one (`inkwash pull`, the
download endpoint). Imports no torch.

A source is a URL or a Hugging Face `OWNER/REPO/PATH/IN/REPO` (resolved by huggingface_hub's
`hf_hub_url`, against `HF_ENDPOINT` when it is set). The bytes go to `NAME.part` beside the destination;
a cut connection is continued with an HTTP Range request, and a later run continues the same `.part`.
The file is checked against a sha256 when one is known (given by the user, else the hub's
X-Linked-Etag), then renamed into place, so the folder never holds part of a model under its name.
A wrong hash removes the partial file. Names, from the user or from a Content-Disposition header,
must stay inside the folder.
"""
from __future__ import annotations

import email.message
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..nodes.folders import KIND_ALIASES, MODEL_EXTENSIONS, MODEL_KINDS, Folders, UnsafePath, safe_path

CHUNK = 1 << 20
MAX_RETRIES = 5  # consecutive failed attempts that made no progress
USER_AGENT = "inkwash-model-download"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(Exception):
    """A download that could not be done; the message says why."""


class DownloadRefused(DownloadError):
    """The request itself is wrong (unsafe or unknown name, unknown folder, file already there)."""


class AlreadyThere(DownloadRefused):
    """The destination exists, or is being downloaded already."""


class HashMismatch(DownloadError):
    """The bytes received are not the file that was asked for."""


@dataclass
class DownloadProgress:
    url: str
    folder: str
    name: str | None
    downloaded: int = 0
    total: int | None = None  # None when the server does not say
    status: str = "starting"  # starting, downloading, verifying, done, failed
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


ProgressCallback = Callable[[DownloadProgress], None]


# -- what to download, and where -------------------------------------------------------------------

def resolve_source(source: str) -> str:
    """The URL for a URL or a Hugging Face `OWNER/REPO/PATH` (huggingface.co `/blob/` links become
    `/resolve/` links, the file rather than its web page)."""
    source = source.strip()
    if source.startswith(("http://", "https://")):
        return re.sub(r"^(https://(?:huggingface\.co|hf\.co)/[^/]+/[^/]+)/blob/", r"\1/resolve/", source)
    parts = source.split("/")
    if len(parts) < 3 or not all(parts) or any(p in (".", "..") for p in parts):
        raise DownloadRefused(f"{source!r} is neither a URL nor a Hugging Face OWNER/REPO/FILE")
    from huggingface_hub import hf_hub_url

    # The endpoint is read here, not when huggingface_hub was imported, so HF_ENDPOINT set later counts.
    return hf_hub_url("/".join(parts[:2]), "/".join(parts[2:]), endpoint=os.environ.get("HF_ENDPOINT") or None)


def folder_kind(folder: str) -> str:
    kind = KIND_ALIASES.get(folder, folder)
    if kind not in MODEL_KINDS:
        raise DownloadRefused(f"unknown model folder {folder!r}; one of: {', '.join(MODEL_KINDS)}")
    return kind


def guess_folder(name: str) -> str | None:
    """The model folder a file's name makes obvious (upscalers, TAESD, ControlNets, LoRAs, VAEs), else
    None: a checkpoint and a LoRA look alike, so the user says which."""
    stem = Path(name).name.lower().rsplit(".", 1)[0]
    tokens = [t for t in re.split(r"[^a-z0-9]+", stem) if t]
    guesses = set()
    if stem.startswith("taesd"):
        guesses.add("vae_approx")
    if re.match(r"^\d+x[-_]|.*(esrgan|swinir|upscal)", stem):
        guesses.add("upscale_models")
    if stem.startswith(("control_", "controlnet", "t2iadapter", "t2i-adapter")):
        guesses.add("controlnet")
    if {"lora", "locon", "lycoris"} & set(tokens):
        guesses.add("loras")
    if tokens and (tokens[0] == "vae" or tokens[-1] == "vae") and not stem.startswith("taesd"):
        guesses.add("vae")
    return guesses.pop() if len(guesses) == 1 else None


def check_name(name: str, where: str) -> str:
    """A destination name: relative, inside its folder, with a model file's extension."""
    if not isinstance(name, str) or not name.strip():
        raise DownloadRefused(f"{where}: empty file name")
    if not name.lower().endswith(MODEL_EXTENSIONS):
        raise DownloadRefused(f"{where}: {name!r} is not a model file name (expected {', '.join(MODEL_EXTENSIONS)})")
    return name


def name_from_url(url: str) -> str | None:
    """The last path segment when it is a model file's name (HF resolve URLs, most direct links)."""
    last = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return last if last.lower().endswith(MODEL_EXTENSIONS) and "\\" not in last else None


def name_from_disposition(header: str | None) -> str | None:
    """The file name a Content-Disposition header gives. A name with a path in it is refused, not
    cleaned: a server that sends one is not to be trusted with where the file goes."""
    if not header:
        return None
    message = email.message.Message()
    message["content-disposition"] = header
    name = message.get_filename()  # decodes RFC 5987 filename*=UTF-8''...
    if name is None:
        return None
    if "/" in name or "\\" in name or name in (".", "..") or os.path.isabs(name) or "\x00" in name:
        raise DownloadRefused(f"the server's Content-Disposition names {name!r}, a path outside the folder")
    return name


def destination(folders: Folders, folder: str | None, name: str, where: str) -> tuple[str, Path]:
    """(model folder, file path) for a file name; DownloadRefused when the name is unsafe, the folder
    unknown or not obvious, or the file there already. `where` says whose name it is, for the message."""
    check_name(name, where)
    kind = folder_kind(folder) if folder else guess_folder(name)
    if kind is None:
        raise DownloadRefused(f"which model folder is {name!r} for? Give a folder "
                              f"(checkpoints, loras, vae, controlnet, embeddings, upscale_models, ...)")
    try:
        target = safe_path(Path(folders.models_dir) / kind, name)
    except UnsafePath as exc:
        raise DownloadRefused(f"{where}: {exc}") from None
    if target.exists():
        raise AlreadyThere(f"{kind}/{name} already exists; delete it first or give another name")
    return kind, target


# -- the transfer ----------------------------------------------------------------------------------

class _RememberLinkedHeaders(urllib.request.HTTPRedirectHandler):
    """Follows redirects to HTTP(S) only, and keeps the sha256 the Hugging Face hub states for an LFS
    file (X-Linked-Etag) on its redirect to the file storage, whose answer does not carry it."""

    def __init__(self) -> None:
        self.linked_etag: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, "redirect to a non-HTTP URL refused", headers, fp)
        etag = (headers.get("X-Linked-Etag") or "").strip().strip('"').removeprefix("W/").strip('"').lower()
        if SHA256_HEX.match(etag):
            self.linked_etag = etag
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _sha256_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest


def download(source: str, folders: Folders, folder: str | None = None, *, name: str | None = None,
             sha256: str | None = None, on_progress: ProgressCallback | None = None,
             claim: Callable[[Path], None] | None = None, timeout: float = 30,
             retry_wait: float = 1.0) -> Path:
    """Download `source` into `folder` (a model folder name; guessed from the file name when None and
    obvious) and return the file's path. `claim(destination)` is called once the destination is known
    and may refuse it (DownloadRefused). Raises DownloadRefused, HashMismatch or DownloadError."""
    url = resolve_source(source)
    expected = (sha256 or "").strip().lower() or None
    if expected is not None and not SHA256_HEX.match(expected):
        raise DownloadRefused(f"--sha256 {sha256!r} is not 64 hex digits")
    if name is not None:
        check_name(name, "--name")
    progress = DownloadProgress(url=url, folder=folder or "", name=name or name_from_url(url))

    def report(**changes) -> None:
        for key, value in changes.items():
            setattr(progress, key, value)
        if on_progress is not None:
            on_progress(progress)

    state: dict = {}

    def place(file_name: str, where: str) -> Path:
        kind, target = destination(folders, folder, file_name, where)
        if claim is not None:
            claim(target)
        progress.folder, progress.name = kind, file_name
        state["target"] = target
        return target

    try:
        if progress.name is not None:
            place(progress.name, "--name" if name else "the URL's file name")
        report()
        return _transfer(url, progress, state, place, expected, report, timeout, retry_wait)
    except DownloadError as exc:
        report(status="failed", error=str(exc))
        raise


def on_the_hub(url: str) -> bool:
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    hub_hosts = {urllib.parse.urlsplit(endpoint).netloc, "huggingface.co", "hf.co"}
    return urllib.parse.urlsplit(url).netloc in hub_hosts


def _transfer(url, progress, state, place, expected, report, timeout, retry_wait) -> Path:
    # The user's Hugging Face token (HF_TOKEN, or `hf auth login`'s file), so gated repos download;
    # sent to the hub only.
    from huggingface_hub import get_token

    hub = on_the_hub(url)
    token = get_token() if hub else None
    redirects = _RememberLinkedHeaders()
    opener = urllib.request.build_opener(redirects)
    failures = 0
    digest = None
    while True:
        target: Path | None = state.get("target")
        part = target.with_name(target.name + ".part") if target is not None else None
        start = part.stat().st_size if part is not None and part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if token:  # unredirected: the hub's redirect to its file storage must not carry it
            request.add_unredirected_header("Authorization", f"Bearer {token}")
        if start:
            request.add_header("Range", f"bytes={start}-")
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start:  # the .part is already whole (or longer than the file)
                size = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
                if start == (int(size.group(1)) if size else progress.total):
                    return _finish(part, target, _sha256_of(part), expected or redirects.linked_etag, report)
                part.unlink(missing_ok=True)
                digest = None
                continue
            hint = ""
            if exc.code in (401, 403) and hub and token is None:
                hint = "; a gated or private Hugging Face repo needs a token (HF_TOKEN, or `hf auth login`)"
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            failures += 1
            if failures > MAX_RETRIES:
                raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from None
            time.sleep(retry_wait)
            continue
        with response:
            if target is None:  # the name comes from the server: its Content-Disposition, else the final URL
                file_name = (name_from_disposition(response.headers.get("Content-Disposition"))
                             or name_from_url(response.url))
                if file_name is None:
                    raise DownloadRefused(f"{url} names no model file; give a name (--name)")
                target = place(file_name, "the server's file name")
                part = target.with_name(target.name + ".part")
                if part.exists() and part.stat().st_size:
                    continue  # ask again, from where the earlier attempt stopped
            if start and response.status != 206:  # the server ignored Range: start over
                start = 0
            elif start:
                match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != start:
                    raise DownloadError(f"{url}: the server answered the range request with another range")
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            if progress.total is None or total is not None:
                progress.total = total
            if digest is None or not start:
                digest = _sha256_of(part) if start else hashlib.sha256()
            target.parent.mkdir(parents=True, exist_ok=True)
            received = start
            report(status="downloading", downloaded=received)
            last_report = time.monotonic()
            cut = False
            try:
                with open(part, "ab" if start else "wb") as file:
                    while not cut:
                        try:
                            chunk = response.read(CHUNK)
                        except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
                            # What was written stays in .part, and the loop asks for the rest.
                            cut, chunk = True, getattr(exc, "partial", b"")
                        if not chunk and not cut:
                            break
                        file.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if time.monotonic() - last_report >= 0.25:
                            report(downloaded=received)
                            last_report = time.monotonic()
                    file.flush()
                    os.fsync(file.fileno())
            except OSError as exc:
                raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
            progress.downloaded = received
            if progress.total is not None and received > progress.total:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: received {received} bytes, more than the {progress.total} announced")
            # Without a length, only an orderly end of the body says the file is whole.
            if received == progress.total or (progress.total is None and not cut):
                return _finish(part, target, digest, expected or redirects.linked_etag, report)
            failures = failures + 1 if received == start else 0
            if failures > MAX_RETRIES:
                raise DownloadError(f"{url}: the connection kept breaking at {received} of {progress.total} bytes")
            report(downloaded=received)


def _finish(part: Path, target: Path, digest, expected: str | None, report: Callable) -> Path:
    report(status="verifying", downloaded=part.stat().st_size)
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise HashMismatch(f"{target.name}: sha256 is {actual}, expected {expected}; the download was removed")
    os.replace(part, target)
    report(status="done")
    return target
