"""Model downloads (`inkwash pull`, POST /api/models/download) against a loopback HTTP server started
here: resume after a cut connection, sha256 checks, unsafe names refused, Hugging Face repo ids resolved
through HF_ENDPOINT, progress on /ws, and the file in the model listing."""
import hashlib
import http.server
import random
import re
import threading

import pytest
from fastapi.testclient import TestClient
from inkwash.webui import cli
from inkwash.webui.model_downloads import (DownloadError, DownloadRefused, HashMismatch, download, guess_folder,
                                          resolve_source)
from inkwash.webui.serve_options import ServeOptions
from inkwash.webui.server import create_app, create_context

SIZE = 3 * 2**20 + 12345  # several read chunks


def payload(seed: int = 7, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


class ModelHost(http.server.ThreadingHTTPServer):
    """Serves `files` (path -> bytes) with Range support. `cut_after[path] = n` sends n bytes of the next
    full answer for that path, then drops the connection (once). `disposition[path]` is sent as
    Content-Disposition. `/{owner}/{repo}/resolve/main/{file}` redirects to `/lfs/{file}` with the file's
    sha256 in X-Linked-Etag, as the Hugging Face hub does."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.disposition: dict[str, str] = {}
        self.ranges: list[str | None] = []  # Range header of each GET, in order
        self.honour_ranges = True
        self.chunked = False  # send bodies chunked, with no Content-Length
        self.authorizations: list[tuple[str, str | None]] = []  # (path, Authorization) of each GET
        self.hold: dict[str, threading.Event] = {}  # path -> wait for this before sending the body

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        host: ModelHost = self.server
        host.ranges.append(self.headers.get("Range"))
        host.authorizations.append((self.path, self.headers.get("Authorization")))
        hub = re.match(r"^/[^/]+/[^/]+/resolve/main/(.+)$", self.path)
        if hub:
            name = hub.group(1)
            data = host.files.get(f"/lfs/{name}")
            if "gated" in self.path and self.headers.get("Authorization") != "Bearer hf_secret":
                return self._answer(401, b"gated")
            if data is None:
                return self._answer(404, b"no such file")
            self.send_response(302)
            self.send_header("Location", f"/lfs/{name}")
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = host.files.get(self.path)
        if data is None:
            return self._answer(404, b"no such file")
        start = 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", "")) if host.honour_ranges else None
        if match:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        if host.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        if self.path in host.disposition:
            self.send_header("Content-Disposition", host.disposition[self.path])
        self.end_headers()
        cut = host.cut_after.pop(self.path, None)
        if self.path in host.hold:
            host.hold[self.path].wait(30)
        if host.chunked:
            # One chunk announced whole; a cut sends part of it.
            self.wfile.write(b"%x\r\n" % len(body) + body[:cut] + (b"" if cut is not None else b"\r\n0\r\n\r\n"))
        else:
            self.wfile.write(body[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True

    def _answer(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def host():
    server = ModelHost()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def folder_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_cut_connection_is_resumed_with_a_range_request_to_the_exact_bytes(host, folders):
    data = payload()
    host.files["/m/model.safetensors"] = data
    host.cut_after["/m/model.safetensors"] = 1_000_000
    seen = []
    path = download(f"{host.url}/m/model.safetensors", folders, "checkpoints", retry_wait=0,
                    on_progress=lambda p: seen.append((p.status, p.downloaded, p.total)))
    assert path == folders.models_dir / "checkpoints" / "model.safetensors"
    assert path.read_bytes() == data
    assert host.ranges == [None, "bytes=1000000-"]
    assert folder_files(path.parent) == ["model.safetensors"]  # no .part left
    assert seen[-1] == ("done", len(data), len(data))
    assert ("downloading", 1_000_000, len(data)) in seen
    assert "model.safetensors" in folders.list("checkpoints")


def test_a_part_file_left_by_an_earlier_run_is_continued(host, folders):
    data = payload(3)
    host.files["/m/lora_style.safetensors"] = data
    target = folders.models_dir / "loras" / "lora_style.safetensors"
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(data[:500_000])
    path = download(f"{host.url}/m/lora_style.safetensors", folders, sha256=hashlib.sha256(data).hexdigest())
    assert path == target and path.read_bytes() == data  # folder guessed: "lora" in the name
    assert host.ranges == ["bytes=500000-"]


def test_a_server_that_ignores_range_is_read_again_from_the_start(host, folders):
    data = payload(4)
    host.files["/m/model.safetensors"] = data
    host.cut_after["/m/model.safetensors"] = 700_000
    host.honour_ranges = False
    path = download(f"{host.url}/m/model.safetensors", folders, "checkpoints", retry_wait=0,
                    sha256=hashlib.sha256(data).hexdigest())
    assert path.read_bytes() == data and host.ranges == [None, "bytes=700000-"]


def test_a_cut_chunked_answer_without_a_length_is_not_taken_for_the_whole_file(host, folders):
    data = payload(6)
    host.files["/m/model.safetensors"] = data
    host.cut_after["/m/model.safetensors"] = 1_500_000
    host.chunked = True
    path = download(f"{host.url}/m/model.safetensors", folders, "checkpoints", retry_wait=0)
    assert path.read_bytes() == data
    # http.client drops the bytes of a chunk read that breaks off, so the rest is asked for from the
    # last whole read, not from the cut.
    first, resumed = host.ranges
    assert first is None and 0 < int(re.match(r"bytes=(\d+)-$", resumed).group(1)) <= 1_500_000


def test_a_whole_part_file_from_a_run_stopped_before_its_rename_is_not_fetched_again(host, folders):
    data = payload(9, size=5000)
    host.files["/m/model.safetensors"] = data
    part = folders.models_dir / "checkpoints" / "model.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    path = download(f"{host.url}/m/model.safetensors", folders, "checkpoints")
    assert path.read_bytes() == data and host.ranges == ["bytes=5000-"] and not part.exists()


def test_a_wrong_sha256_is_refused_and_nothing_is_left(host, folders):
    host.files["/m/model.safetensors"] = payload()
    with pytest.raises(HashMismatch, match="expected " + "0" * 64):
        download(f"{host.url}/m/model.safetensors", folders, "checkpoints", sha256="0" * 64)
    assert folder_files(folders.models_dir / "checkpoints") == []
    assert folders.list("checkpoints") == []


@pytest.mark.parametrize("header", ['attachment; filename="../../evil.safetensors"',
                                    "attachment; filename*=UTF-8''%2Fetc%2Fevil.safetensors",
                                    'attachment; filename="sub\\\\..\\\\..\\\\evil.safetensors"'])
def test_a_traversal_name_from_content_disposition_is_refused(host, folders, header):
    host.files["/api/download/123"] = payload(size=1000)
    host.disposition["/api/download/123"] = header
    with pytest.raises(DownloadRefused, match="outside the folder"):
        download(f"{host.url}/api/download/123", folders, "loras")
    assert not any(p.is_file() for p in folders.models_dir.parent.rglob("*evil*"))


def test_a_content_disposition_name_is_used_when_the_url_has_none(host, folders):
    data = payload(size=2000)
    host.files["/api/download/123"] = data
    host.disposition["/api/download/123"] = "attachment; filename*=UTF-8''detail%20tweaker.safetensors"
    path = download(f"{host.url}/api/download/123", folders, "loras")
    assert path.name == "detail tweaker.safetensors" and path.read_bytes() == data


@pytest.mark.parametrize("name", ["../escape.safetensors", "/tmp/abs.safetensors", "notes.txt"])
def test_an_unsafe_or_non_model_name_from_the_user_is_refused_before_fetching(host, folders, name):
    host.files["/m/model.safetensors"] = payload(size=100)
    with pytest.raises(DownloadRefused):
        download(f"{host.url}/m/model.safetensors", folders, "checkpoints", name=name)
    assert host.ranges == []


def test_an_unclear_folder_or_an_existing_file_is_refused(host, folders):
    host.files["/m/model.safetensors"] = payload(size=100)
    with pytest.raises(DownloadRefused, match="which model folder"):
        download(f"{host.url}/m/model.safetensors", folders)
    with pytest.raises(DownloadRefused, match="unknown model folder 'nope'"):
        download(f"{host.url}/m/model.safetensors", folders, "nope")
    download(f"{host.url}/m/model.safetensors", folders, "checkpoints")
    with pytest.raises(DownloadRefused, match="already exists"):
        download(f"{host.url}/m/model.safetensors", folders, "checkpoints")


def test_sources_are_urls_or_hub_files_and_nothing_else(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert resolve_source("https://huggingface.co/acme/m/blob/main/sub/x.safetensors") == \
        "https://huggingface.co/acme/m/resolve/main/sub/x.safetensors"
    assert resolve_source("acme/m/sub/x.safetensors") == "https://huggingface.co/acme/m/resolve/main/sub/x.safetensors"
    for source in ("file:///etc/passwd", "ftp://example.com/x.safetensors", "acme/x.safetensors", "acme/../x/y"):
        with pytest.raises(DownloadRefused, match="neither a URL nor a Hugging Face"):
            resolve_source(source)


def test_folder_guesses_are_only_the_obvious_ones():
    assert guess_folder("4x-UltraSharp.pth") == "upscale_models"
    assert guess_folder("RealESRGAN_x4plus.pth") == "upscale_models"
    assert guess_folder("taesdxl_decoder.pth") == "vae_approx"
    assert guess_folder("control_v11p_sd15_canny.pth") == "controlnet"
    assert guess_folder("sdxl_vae.safetensors") == "vae"
    assert guess_folder("add_detail_lora.safetensors") == "loras"
    assert guess_folder("v1-5-pruned-emaonly.safetensors") is None


def test_a_hugging_face_repo_id_resolves_through_hf_endpoint_and_uses_the_hub_sha256(host, folders, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", host.url)
    data = payload(11)
    host.files["/lfs/sd_vae.safetensors"] = data
    assert resolve_source("acme/tiny-models/sd_vae.safetensors") == \
        f"{host.url}/acme/tiny-models/resolve/main/sd_vae.safetensors"
    path = download("acme/tiny-models/sd_vae.safetensors", folders, "vae")
    assert path.read_bytes() == data
    # The hub's sha256 is checked: a file that changed behind it is refused.
    host.files["/lfs/other_vae.safetensors"] = data
    real = Handler.do_GET

    def wrong_bytes(handler):
        if handler.path.startswith("/lfs/other"):
            handler.server.files["/lfs/other_vae.safetensors"] = payload(12)
        return real(handler)

    monkeypatch.setattr(Handler, "do_GET", wrong_bytes)
    with pytest.raises(HashMismatch):
        download("acme/tiny-models/other_vae.safetensors", folders, "vae")
    assert folder_files(folders.models_dir / "vae") == ["sd_vae.safetensors"]


def test_a_gated_repo_gets_the_users_token_and_the_file_storage_does_not(host, folders, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", host.url)
    data = payload(13, size=2000)
    host.files["/lfs/gated_vae.safetensors"] = data
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(DownloadError, match="HTTP 401.*needs a token"):
        download("acme/gated/gated_vae.safetensors", folders, "vae")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_secret")
    host.authorizations.clear()
    assert download("acme/gated/gated_vae.safetensors", folders, "vae").read_bytes() == data
    assert host.authorizations == [("/acme/gated/resolve/main/gated_vae.safetensors", "Bearer hf_secret"),
                                   ("/lfs/gated_vae.safetensors", None)]
    # Another host never gets it.
    host.files["/m/model.safetensors"] = data
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    host.authorizations.clear()
    download(f"{host.url}/m/model.safetensors", folders, "checkpoints")
    assert host.authorizations == [("/m/model.safetensors", None)]


def test_cli_pull_exits_0_with_the_file_and_non_zero_with_a_message(host, folders, capsys):
    data = payload(size=4096)
    host.files["/m/model.safetensors"] = data
    host.files["/m/bad.safetensors"] = data
    models = str(folders.models_dir)
    assert cli.main(["pull", f"{host.url}/m/model.safetensors", "--folder", "checkpoints", "--models-dir", models]) == 0
    out = capsys.readouterr()
    assert out.out.strip().endswith("checkpoints/model.safetensors") and "done checkpoints/model.safetensors" in out.err
    assert (folders.models_dir / "checkpoints" / "model.safetensors").read_bytes() == data

    assert cli.main(["pull", f"{host.url}/m/bad.safetensors", "--folder", "checkpoints", "--sha256", "a" * 64,
                     "--models-dir", models]) == cli.EXIT_FAILED
    assert "sha256" in capsys.readouterr().err
    assert cli.main(["pull", f"{host.url}/m/missing.safetensors", "--folder", "loras", "--models-dir", models]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert cli.main(["pull", f"{host.url}/m/model.safetensors", "--models-dir", models]) == cli.EXIT_INVALID
    assert "which model folder" in capsys.readouterr().err
    assert cli.main(["pull", f"{host.url}/m/model.safetensors", "--folder", "checkpoints", "--name", "../x.safetensors",
                     "--models-dir", models]) == cli.EXIT_INVALID
    assert "leaves its folder" in capsys.readouterr().err


def test_the_endpoint_downloads_in_the_background_reports_progress_on_ws_and_lists_the_file(host, folders, tmp_path):
    data = payload(5)
    host.files["/m/model.safetensors"] = data
    host.cut_after["/m/model.safetensors"] = 2_000_000
    options = ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir,
                           input_dir=folders.input_dir, data_dir=tmp_path / "data")
    ctx = create_context(options)
    with TestClient(create_app(ctx, options, with_ui=False), base_url="http://127.0.0.1:7860") as client:
        with client.websocket_connect("ws://127.0.0.1:7860/ws?clientId=watcher") as ws:
            assert ws.receive_json()["type"] == "status"
            answer = client.post("/api/models/download", json={"source": f"{host.url}/m/model.safetensors",
                                                                "folder": "checkpoints"})
            assert answer.status_code == 200, answer.text
            # The same file again, while the first is under way, is refused.
            again = client.post("/api/models/download", json={"source": f"{host.url}/m/model.safetensors",
                                                               "folder": "checkpoints"})
            assert again.status_code == 409 and "already being downloaded" in again.json()["error"]
            bad = client.post("/api/models/download", json={"source": f"{host.url}/m/x.safetensors",
                                                             "folder": "loras", "name": "../../x.safetensors"})
            assert bad.status_code == 400 and "leaves its folder" in bad.json()["error"]
            seen = []
            while not seen or seen[-1]["status"] not in ("done", "failed"):
                message = ws.receive_json()
                if message["type"] == "download_progress":
                    seen.append(message["data"])
        assert seen[-1]["status"] == "done", seen[-1]
        assert seen[-1]["downloaded"] == seen[-1]["total"] == len(data)
        assert [e["status"] for e in seen if e["status"] != "downloading"] == ["starting", "verifying", "done"]
        listed = client.get("/api/models/downloads").json()
        assert [(d["id"], d["status"], d["name"]) for d in listed] == \
            [(answer.json()["id"], "done", "model.safetensors")]
        assert "model.safetensors" in client.get("/api/models/checkpoints").json()
        assert ctx.folders.list("checkpoints") == ["model.safetensors"]
        assert (folders.models_dir / "checkpoints" / "model.safetensors").read_bytes() == data
        # Once it is there, asking again is refused as already there.
        there = client.post("/api/models/download", json={"source": f"{host.url}/m/model.safetensors",
                                                           "folder": "checkpoints"})
        assert there.status_code == 409 and "already exists" in there.json()["error"]


def test_the_endpoint_is_behind_the_credentials(folders, tmp_path):
    from inkwash.webui.security import Credentials

    options = ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir,
                           input_dir=folders.input_dir, data_dir=tmp_path / "data",
                           credentials=Credentials.from_auth_args("ann:s3cret", iterations=1000))
    client = TestClient(create_app(create_context(options), options, with_ui=False), base_url="http://127.0.0.1:7860")
    assert client.get("/api/models/downloads").status_code == 401
    assert client.post("/api/models/download", json={"source": "http://127.0.0.1:9/m.safetensors"}).status_code == 401
    assert client.get("/api/models/downloads", auth=("ann", "s3cret")).json() == []


def test_downloads_beyond_the_bound_wait_their_turn(host, folders, monkeypatch):
    from types import SimpleNamespace

    from inkwash.webui import model_download_api
    from inkwash.webui.events import EventHub

    monkeypatch.setattr(model_download_api, "MAX_RUNNING", 1)
    downloads = model_download_api.Downloads(SimpleNamespace(hub=EventHub(), folders=folders))
    first, second = payload(1, size=3000), payload(2, size=4000)
    host.files.update({"/m/first.safetensors": first, "/m/second.safetensors": second})
    release = host.hold["/m/first.safetensors"] = threading.Event()
    request = model_download_api.DownloadRequest
    a = downloads.start(request(source=f"{host.url}/m/first.safetensors", folder="loras"))
    b = downloads.start(request(source=f"{host.url}/m/second.safetensors", folder="loras"))

    def statuses_when(ready) -> dict:
        for _ in range(600):
            statuses = {d["id"]: d["status"] for d in downloads.list()}
            if ready(statuses):
                return statuses
            threading.Event().wait(0.05)
        return statuses

    # The first has its answer's headers and waits for its body: the second is not started meanwhile.
    statuses = statuses_when(lambda s: s[a["id"]] == "downloading")
    assert statuses == {a["id"]: "downloading", b["id"]: "queued"}
    assert host.ranges == [None]
    release.set()
    statuses_when(lambda s: set(s.values()) == {"done"})
    assert [d["status"] for d in downloads.list()] == ["done", "done"]
    assert folders.list("loras") == ["first.safetensors", "second.safetensors"]
    assert (folders.models_dir / "loras" / "second.safetensors").read_bytes() == second


def test_a_background_download_refused_by_the_server_s_name_ends_failed_with_the_reason(host, folders):
    from types import SimpleNamespace

    from inkwash.webui import model_download_api
    from inkwash.webui.events import EventHub

    hub = EventHub()
    events = hub.subscribe(None)
    downloads = model_download_api.Downloads(SimpleNamespace(hub=hub, folders=folders))
    host.files["/api/download/9"] = payload(size=100)
    host.disposition["/api/download/9"] = 'attachment; filename="../../../evil.safetensors"'
    downloads.start(model_download_api.DownloadRequest(source=f"{host.url}/api/download/9", folder="loras"))
    event, data = events.get(30)
    while data["status"] not in ("done", "failed"):
        event, data = events.get(30)
    assert event == "download_progress" and data["status"] == "failed"
    assert "outside the folder" in data["error"]
    assert [d["status"] for d in downloads.list()] == ["failed"]
    assert not any(p.is_file() for p in folders.models_dir.parent.rglob("*evil*"))
