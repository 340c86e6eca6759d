"""Hostile files: PNG text that inflates without bound is refused, at the format and at the doors."""
import base64
import io
import struct
import zlib

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from inkwash.nodes.formats import png_metadata


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def text_bomb(chunks: int = 10, inflated: int = 900_000) -> bytes:
    """A small valid PNG with `chunks` zTXt chunks after its image data, each inflating to `inflated`."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    data = buffer.getvalue()
    bomb = zlib.compress(b"x" * inflated, 9)
    extra = b"".join(_chunk(b"zTXt", f"k{i}".encode() + b"\x00\x00" + bomb) for i in range(chunks))
    end = data.rindex(b"IEND") - 4
    return data[:end] + extra + data[end:]


def test_text_chunks_are_bounded_in_total_however_many_there_are():
    data = text_bomb()
    assert len(data) < 100_000  # each chunk alone is under every per-chunk limit (Pillow: 1 MB)
    with pytest.raises(png_metadata.PngTextTooLarge, match="more than 8388608 bytes"):
        png_metadata.read_png_text(data)
    assert len(png_metadata.read_png_text(text_bomb(chunks=9))["k8"]) == 900_000  # under the bound: read


def test_png_info_refuses_a_text_bomb_with_a_4xx(folders, tmp_path):
    from inkwash.nodes.registry import core_nodes
    from inkwash.webui.a1111_api import router
    from inkwash.webui.context import ServerContext
    from inkwash.webui.events import EventHub
    from inkwash.webui.jobs import JobQueue

    queue = JobQueue(tmp_path / "jobs.db", core_nodes(), EventHub())
    ctx = ServerContext(queue=queue, hub=EventHub(), folders=folders, registry=core_nodes(), data_dir=tmp_path)
    app = FastAPI()
    app.include_router(router(ctx))
    with TestClient(app) as client:
        answer = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(text_bomb()).decode()})
        assert answer.status_code in (413, 422), answer.text
        assert "inflate" in answer.text and len(answer.content) < 10_000
        small = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(text_bomb(1, 1000)).decode()})
        assert small.status_code == 200 and small.json()["items"] == {"k0": "x" * 1000}
    queue.close()


def test_workflow_upload_and_png_info_tab_say_the_png_is_refused(tmp_path):
    from inkwash.webui.tabs import pnginfo, workflow_files

    path = tmp_path / "bomb.png"
    path.write_bytes(text_bomb())
    info, workflow, note = pnginfo.png_info(str(path))
    assert note.startswith("Not read:") and "inflate" in note and info == workflow == ""

    class Ctx:
        max_upload_bytes = 2**20

    with pytest.raises(workflow_files.WorkflowError, match="bomb.png: .*inflate"):
        workflow_files.load_upload(Ctx(), path)


class NotATensor:
    """Stands for the Python objects a hostile or old pickle carries."""


def test_a_safetensors_header_nested_deep_is_named_corrupt(tmp_path):
    from inkwash.nodes.runtime.state_dict_files import CheckpointError, open_state_dict

    header = b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="deep.safetensors: .*corrupt.*nested too deeply"):
        open_state_dict(path)


def test_a_pickled_annotator_with_objects_is_refused_without_suggesting_the_unsafe_fix(tmp_path, monkeypatch):
    import torch

    from inkwash.nodes.runtime import annotators
    from inkwash.nodes.runtime.state_dict_files import CheckpointError

    path = tmp_path / "dpt_hybrid-midas-501f0c75.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": NotATensor()}, path)
    with pytest.raises(CheckpointError) as refused:
        annotators._load_midas(path)
    message = str(refused.value)
    assert message.startswith(path.name) and "refused" in message
    assert "weights_only" not in message and "False" not in message


def test_a_corrupt_pickle_is_named_without_torchs_unsafe_advice(tmp_path):
    from inkwash.nodes.runtime.state_dict_files import CheckpointError, open_state_dict

    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"\x80\x02" + bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="garbage.ckpt: not a readable checkpoint") as refused:
        open_state_dict(path)
    assert "weights_only" not in str(refused.value) and "False" not in str(refused.value)
