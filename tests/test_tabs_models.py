"""The Models panel's handlers: the installed list (size, family from the header, short hash), deleting
inside the folder only (demo models and traversal refused), and a download started from the form
against a loopback HTTP server, its progress listed until done."""
import functools
import hashlib
import http.server
import threading

import gradio as gr
import pytest

from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.model_download_api import Downloads
from inkwash.webui.tabs import models
from tiny_models import write_tiny_esrgan

from conftest import TINY_CKPT

LOOPBACK = "127.0.0.1"


@pytest.fixture
def ctx(folders, checkpoint, tmp_path):
    context = ServerContext(queue=None, hub=EventHub(), folders=folders, registry={}, data_dir=tmp_path / "data")
    context.downloads = Downloads(context)
    return context


@pytest.fixture
def model_host(tmp_path):
    """A loopback HTTP server over a folder of files."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def rows_by_name(ctx):
    return {(row[0], row[1]): row for row in models.installed(ctx)}


def test_the_installed_list_has_size_family_and_hash(ctx, checkpoint, folders):
    write_tiny_esrgan(folders.models_dir / "upscale_models", "4x-tiny.safetensors")
    (folders.models_dir / "checkpoints" / "not-a-model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    rows = rows_by_name(ctx)
    folder, name, size, family, short = rows[("checkpoints", TINY_CKPT)]
    assert family == "sd1"
    assert short == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert size == models.human_size(checkpoint.stat().st_size) and size.endswith("MB")
    assert rows[("checkpoints", "not-a-model.safetensors")][3] == "unknown"
    upscaler = rows[("upscale_models", "4x-tiny.safetensors")]
    assert upscaler[3] == "" and len(upscaler[4]) == 10  # no family outside checkpoints


def test_a_big_file_is_hashed_in_the_background_and_listed_once_known(ctx, checkpoint, monkeypatch, hasher):
    from inkwash.nodes.formats import file_hashes

    monkeypatch.setattr(file_hashes, "HASH_ON_LISTING_BYTES", checkpoint.stat().st_size - 1)
    reading, release = threading.Event(), threading.Event()
    hasher.on_chunk = lambda *_: (reading.set(), release.wait(30))  # the background read held at its first chunk
    assert rows_by_name(ctx)[("checkpoints", TINY_CKPT)][4] == ""  # not hashed on the spot: queued
    assert reading.wait(30)
    status = models.hashing_status()
    assert status.startswith(f"Hashing {TINY_CKPT} (1.0 MB of ") and "0 of 1 files" in status
    release.set()
    assert hasher.wait_for(checkpoint) == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert rows_by_name(ctx)[("checkpoints", TINY_CKPT)][4] == hasher.wait_for(checkpoint)


def test_delete_removes_the_file_inside_its_folder(ctx, folders):
    path = write_tiny_esrgan(folders.models_dir / "upscale_models", "4x-gone.pth")
    assert models.delete(ctx, "upscale_models", "4x-gone.pth") == "Deleted upscale_models/4x-gone.pth"
    assert not path.exists() and ("upscale_models", "4x-gone.pth") not in rows_by_name(ctx)


@pytest.mark.parametrize("folder, name, message", [
    ("upscale_models", "sub/../../checkpoints/" + TINY_CKPT, "leaves its folder"),
    ("loras", "../checkpoints/" + TINY_CKPT, "leaves its folder"),
    ("checkpoints", "/etc/passwd", "must be relative"),
    ("checkpoints", "missing.safetensors", "not in the checkpoints folder"),
    ("output", "x.png", "not one of"),
    ("checkpoints", "", "Pick a model"),
])
def test_delete_refuses_names_outside_the_folder(ctx, checkpoint, folder, name, message):
    with pytest.raises(gr.Error, match=message):
        models.delete(ctx, folder, name)
    assert checkpoint.exists()


def test_delete_refuses_the_demo_models(ctx, checkpoint):
    demo = checkpoint.with_name("inkwash-demo.safetensors")
    demo.write_bytes(checkpoint.read_bytes())
    with pytest.raises(gr.Error, match="bundled demo model"):
        models.delete(ctx, "checkpoints", demo.name)
    assert demo.exists()


def test_the_download_form_starts_a_download_and_lists_its_progress(ctx, folders, model_host):
    served, url = model_host
    data = b"upscaler weights " * 1000
    (served / "4x-served.pth").write_bytes(data)
    message = models.start_download(ctx, f"{url}/4x-served.pth", "upscale_models", hashlib.sha256(data).hexdigest())
    assert message == f"Downloading {url}/4x-served.pth into upscale_models"

    def finished():
        rows = models.download_rows(ctx)
        return rows if rows and rows[0][3] in ("done",) or rows[0][3].startswith("failed") else None

    rows = _wait(finished)
    assert rows[0][:4] == [f"{url}/4x-served.pth", "upscale_models", "4x-served.pth", "done"]
    assert rows[0][4].startswith("100%")
    assert (folders.models_dir / "upscale_models" / "4x-served.pth").read_bytes() == data
    assert ("upscale_models", "4x-served.pth") in rows_by_name(ctx)


def test_the_download_form_refuses_bad_input(ctx, model_host):
    _, url = model_host
    with pytest.raises(gr.Error, match="Give a URL"):
        models.start_download(ctx, "  ", "checkpoints", "")
    with pytest.raises(gr.Error, match="not 64 hex digits"):
        models.start_download(ctx, f"{url}/a.safetensors", "checkpoints", "abc")
    with pytest.raises(gr.Error, match="unknown model folder 'outputs'"):
        models.start_download(ctx, f"{url}/a.safetensors", "outputs", "")
    assert models.download_rows(ctx) == []


def _wait(predicate, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while (value := predicate()) is None:
        assert time.monotonic() < deadline, "the download did not finish"
        time.sleep(0.05)
    return value
