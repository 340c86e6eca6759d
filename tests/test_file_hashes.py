"""The model hasher (nodes/formats/file_hashes.py): A1111's hashes computed once per file signature and
kept in the data folder across restarts, hashed in the background with progress; and the matching of
A1111 references (titles, bare hashes, infotext Model hash / Lora hashes) to renamed files."""
import hashlib
import json
import os
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from inkwash.nodes.formats import file_hashes
from inkwash.nodes.formats.png_metadata import format_infotext
from inkwash.webui import model_hashes_api, model_match
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub

MB = 2**20


def random_file(path, size=3 * MB, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random_bytes(size, seed))
    return path


def random_bytes(size, seed):
    return hashlib.shake_256(seed.to_bytes(4, "little")).digest(size)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def counting(hasher):
    """A list that gets one entry per chunk the hasher reads."""
    reads = []
    hasher.on_chunk = lambda path, done, total: reads.append((path, done, total))
    return reads


def test_the_hash_is_a1111s_short_sha256_read_once_and_kept_across_a_restart(tmp_path):
    model = random_file(tmp_path / "models" / "a.safetensors")
    cache_file = tmp_path / "data" / file_hashes.CACHE_FILE
    hasher = file_hashes.Hasher(cache_file)
    reads = counting(hasher)
    assert hasher.wait_for(model) == sha256(model)[:10]
    assert len(reads) == 3 and reads[-1][1:] == (3 * MB, 3 * MB)  # 1 MiB chunks
    assert hasher.wait_for(model) == sha256(model)[:10] and hasher.short_hash(model) == sha256(model)[:10]
    assert hasher.known(model) == sha256(model) and len(reads) == 3  # not read again
    saved = json.loads(cache_file.read_text())["files"][str(model.resolve())]
    assert saved["sha256"] == sha256(model) and saved["size"] == 3 * MB

    restarted = file_hashes.Hasher(cache_file)  # a new process reads the cache file
    reads = counting(restarted)
    assert restarted.short_hash(model) == sha256(model)[:10] and restarted.wait_for(model) == sha256(model)[:10]
    assert reads == [] and restarted.progress()["queued"] == 0


def test_a_changed_file_is_hashed_again(tmp_path):
    model = random_file(tmp_path / "a.safetensors")
    hasher = file_hashes.Hasher(tmp_path / "hashes.json")
    first = hasher.wait_for(model)
    stat = model.stat()
    model.write_bytes(random_bytes(3 * MB, seed=1))  # same size, new content and mtime
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert hasher.known(model) is None
    reads = counting(hasher)
    assert hasher.wait_for(model) == sha256(model)[:10] != first and len(reads) == 3
    with open(model, "ab") as grown:  # another size
        grown.write(b"more")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # even with the mtime it had
    assert hasher.wait_for(model) == sha256(model)[:10] and len(reads) == 7


def test_short_hash_queues_the_file_and_the_background_thread_reports_progress(tmp_path):
    small = random_file(tmp_path / "small.safetensors", size=MB)
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as sparse:  # 64 MiB, mostly a hole
        sparse.truncate(64 * MB)
    hasher = file_hashes.Hasher(tmp_path / "hashes.json")
    halfway, release = threading.Event(), threading.Event()
    seen = []

    def on_chunk(path, done, total):
        seen.append((os.path.basename(path), done, total))
        if path.endswith("big.safetensors") and done == 32 * MB:
            halfway.set()
            release.wait(30)

    hasher.on_chunk = on_chunk
    assert hasher.enqueue([big, small]) == 2  # smallest first
    assert halfway.wait(30)
    assert hasher.short_hash(big) is None and hasher.enqueue([big, small]) == 0  # not read here, not queued twice
    progress = hasher.progress()
    assert progress["hashing"] == [{"path": str(big.resolve()), "kind": "sha256", "done": 32 * MB,
                                    "total": 64 * MB, "name": "big.safetensors"}]
    assert (progress["files_done"], progress["files_total"]) == (1, 2)  # the small one first
    assert (progress["bytes_done"], progress["bytes_total"]) == (33 * MB, 65 * MB)
    assert hasher.known(small) == sha256(small) and hasher.known(big) is None
    release.set()
    assert hasher.wait_for(big) == hashlib.sha256(bytes(64 * MB)).hexdigest()[:10]  # waits for the thread
    assert [done for name, done, _ in seen if name == "big.safetensors"] == [n * MB for n in range(1, 65)]  # once
    hasher.stop()
    assert hasher.progress()["hashing"] == []


def test_the_server_hashes_every_model_folder_and_publishes_progress(tmp_path, folders, hasher):
    files = {folder: random_file(folders.models_dir / folder / f"m.{ext}", seed=n)
             for n, (folder, ext) in enumerate([("checkpoints", "safetensors"), ("vae", "pt"),
                                               ("embeddings", "pt"), ("loras", "pt")])}
    ctx = ServerContext(queue=None, hub=EventHub(), folders=folders, registry={}, data_dir=tmp_path / "data")
    hasher.on_chunk = model_hashes_api.publisher(ctx)
    app = FastAPI()
    app.include_router(model_hashes_api.router(ctx))
    with ctx.hub.subscribe(None) as events:
        assert hasher.enqueue_folders(folders) == 4
        for folder, path in files.items():
            assert hasher.wait_for(path, file_hashes.HASHED_FOLDERS[folder]) == sha256(path)[:SHORT[folder]]
        published = [event for event in events.drain() if event[0] == "hash_progress"]
    assert len(published) >= 4 and all("hashing" in data and "bytes_total" in data for _, data in published)
    body = TestClient(app).get("/api/models/hashes").json()
    listed = {(f["folder"], f["name"]): f for f in body["files"]}
    assert listed["loras", "m.pt"] == {"folder": "loras", "name": "m.pt", "kind": "addnet",
                                       "hash": sha256(files["loras"])[:12], "digest": sha256(files["loras"])}
    assert listed["checkpoints", "m.safetensors"]["hash"] == sha256(files["checkpoints"])[:10]
    assert set(body["progress"]) >= {"hashing", "queued", "files_done", "files_total", "bytes_done", "bytes_total"}


SHORT = {"checkpoints": 10, "vae": 10, "embeddings": 10, "loras": 12}


def test_a_lora_hash_is_the_addnet_hash_of_its_tensor_data_or_the_recorded_one(tmp_path):
    header = json.dumps({"__metadata__": {"ss_output_name": "x"}}).encode()
    data = random_bytes(MB + 5, seed=2)
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(len(header).to_bytes(8, "little") + header + data)
    hasher = file_hashes.Hasher()
    assert hasher.wait_for(lora, file_hashes.ADDNET) == hashlib.sha256(data).hexdigest()[:12]
    assert hasher.wait_for(lora) == sha256(lora)[:10]  # its model hash differs
    recorded = json.dumps({"__metadata__": {"sshs_model_hash": "0123456789abcdef"}}).encode()
    lora.write_bytes(len(recorded).to_bytes(8, "little") + recorded + data)
    assert hasher.wait_for(lora, file_hashes.ADDNET) == "0123456789ab"


def test_a_folder_has_no_hash_and_is_not_queued(tmp_path):
    folder = tmp_path / "diffusers-model"
    folder.mkdir()
    hasher = file_hashes.Hasher()
    assert hasher.short_hash(folder) is None and hasher.progress()["queued"] == 0
    with pytest.raises(ValueError, match="folder"):
        hasher.wait_for(folder)


# -- matching A1111 references to files ---------------------------------------------------------------------

def test_a_renamed_checkpoint_is_found_by_its_hash_then_by_name(folders, hasher):
    checkpoints = folders.models_dir / "checkpoints"
    renamed = random_file(checkpoints / "renamed.safetensors", seed=5)
    other = random_file(checkpoints / "original.safetensors", seed=6)
    short = sha256(renamed)[:10]
    # an infotext made before the rename names the old file, which is now another model
    parsed = {"Model": "original", "Model hash": short}
    assert model_match.infotext_checkpoint(folders, parsed, wait=True) == model_match.Match("renamed.safetensors",
                                                                                             "hash")
    assert model_match.find_checkpoint(folders, f"original.safetensors [{short}]").name == "renamed.safetensors"
    assert model_match.find_checkpoint(folders, sha256(renamed)).name == "renamed.safetensors"  # full sha256
    assert model_match.find_checkpoint(folders, "original").name == "original.safetensors"
    unknown = {"Model": "original", "Model hash": "0000000000"}
    assert model_match.infotext_checkpoint(folders, unknown, wait=True) == model_match.Match("original.safetensors",
                                                                                              "name")
    assert model_match.infotext_checkpoint(folders, {"Model": "gone", "Model hash": "0000000000"}).name is None
    assert hasher.known(other) == sha256(other)


def test_without_waiting_an_unhashed_big_file_is_queued_and_reported(folders, hasher, monkeypatch):
    renamed = random_file(folders.models_dir / "checkpoints" / "renamed.safetensors", seed=7)
    small = random_file(folders.models_dir / "checkpoints" / "small.safetensors", size=MB, seed=14)
    monkeypatch.setattr(file_hashes, "HASH_ON_LISTING_BYTES", MB)
    found = model_match.infotext_checkpoint(folders, {"Model": "old", "Model hash": sha256(small)[:10]})
    assert found == model_match.Match("small.safetensors", "hash")  # small enough to hash on the spot
    release = threading.Event()
    hasher.on_chunk = lambda *_: release.wait(30)
    found = model_match.infotext_checkpoint(folders, {"Model": "old", "Model hash": sha256(renamed)[:10]})
    assert found == model_match.Match(None, None, unhashed=1)
    release.set()
    hasher.wait_for(renamed)
    found = model_match.infotext_checkpoint(folders, {"Model": "old", "Model hash": sha256(renamed)[:10]})
    assert found == model_match.Match("renamed.safetensors", "hash")


def test_lora_tags_are_relinked_to_renamed_files_by_lora_hashes(folders, hasher):
    loras = folders.models_dir / "loras"
    moved = random_file(loras / "sub" / "style-v2.pt", seed=8)
    random_file(loras / "kept.pt", seed=9)
    prompt = "a cat <lora:style:0.8> <lora:kept:1> <lora:gone:1>"
    hashes = f"style: {sha256(moved)[:12]}, kept: {sha256(loras / 'kept.pt')[:12]}, gone: 0123456789ab"
    assert model_match.relink_lora_tags(prompt, hashes, folders, wait=True) == \
        "a cat <lora:sub/style-v2:0.8> <lora:kept:1> <lora:gone:1>"
    assert model_match.relink_lora_tags(prompt, None, folders) == prompt
    assert model_match.parse_hash_list(hashes) == {"style": sha256(moved)[:12], "kept": sha256(loras / "kept.pt")[:12],
                                                   "gone": "0123456789ab"}


def test_png_info_sends_the_renamed_checkpoint_and_says_when_it_chose_by_name(folders, hasher):
    from inkwash.webui.tabs import pnginfo

    renamed = random_file(folders.models_dir / "checkpoints" / "renamed.safetensors", seed=10)
    random_file(folders.models_dir / "checkpoints" / "original.safetensors", seed=11)
    hasher.wait_for(renamed)
    infotext = format_infotext("a cat", "", {"Steps": 3, "Sampler": "Euler", "CFG scale": 7, "Seed": 1,
                                             "Model hash": sha256(renamed)[:10], "Model": "original"})
    assert pnginfo.infotext_fields(infotext, folders)["checkpoint"] == "renamed.safetensors"
    assert pnginfo.checkpoint_note(infotext, folders) == ""
    other = infotext.replace(sha256(renamed)[:10], "0000000000")
    assert pnginfo.infotext_fields(other, folders)["checkpoint"] == "original.safetensors"
    assert pnginfo.checkpoint_note(other, folders).startswith("Checkpoint original.safetensors chosen by name")


def test_the_infotext_names_the_prompts_embeddings_with_their_ti_hashes(folders, hasher):
    from inkwash.nodes.core.image import _ti_hash
    from inkwash.nodes.formats.png_metadata import infotext_from_workflow, parse_infotext

    bad_hands = random_file(folders.models_dir / "embeddings" / "sub" / "bad-hands.pt", size=MB, seed=12)
    style = random_file(folders.models_dir / "embeddings" / "style.safetensors", size=MB, seed=13)
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a cat, embedding:style."}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1],
                                                         "text": "embedding:bad-hands, embedding:missing"}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                   "seed": 1, "steps": 20, "cfg": 7, "sampler_name": "euler",
                                                   "scheduler": "normal", "latent_image": ["5", 0], "denoise": 1}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
    }
    info = parse_infotext(infotext_from_workflow(graph, "9", ti_hash=_ti_hash, version="v"))
    assert info["TI hashes"] == f"style: {sha256(style)[:10]}, bad-hands: {sha256(bad_hands)[:10]}"
    assert "TI hashes" not in parse_infotext(infotext_from_workflow(graph, "9", version="v"))


def test_the_server_queues_its_models_at_start_and_a_restart_reads_none_again(folders, tmp_path):
    from inkwash.webui.serve_options import ServeOptions
    from inkwash.webui.server import create_app, create_context

    model = random_file(folders.models_dir / "checkpoints" / "m.safetensors", seed=15)
    lora = random_file(folders.models_dir / "loras" / "l.pt", size=MB, seed=16)
    options = ServeOptions(models_dir=folders.models_dir, output_dir=folders.output_dir,
                           input_dir=folders.input_dir, data_dir=tmp_path / "data")
    previous = file_hashes.current()
    try:
        ctx = create_context(options)
        release = threading.Event()
        file_hashes.current().on_chunk = lambda *_: release.wait(30)  # the background thread held at its first read
        with TestClient(create_app(ctx, options, with_ui=False), base_url="http://127.0.0.1:7860") as client:
            progress = file_hashes.current().progress()
            assert (progress["files_total"], progress["bytes_total"]) == (2, 4 * MB)  # queued when the server started
            release.set()
            assert file_hashes.current().wait_for(model) == sha256(model)[:10]
            assert file_hashes.current().wait_for(lora, file_hashes.ADDNET) == sha256(lora)[:12]
            files = {f["name"]: f["hash"] for f in client.get("/api/models/hashes").json()["files"]}
            assert files == {"m.safetensors": sha256(model)[:10], "l.pt": sha256(lora)[:12]}
        assert (tmp_path / "data" / file_hashes.CACHE_FILE).is_file()

        ctx = create_context(options)  # a restart
        reads = counting(file_hashes.current())
        with TestClient(create_app(ctx, options, with_ui=False), base_url="http://127.0.0.1:7860") as client:
            assert file_hashes.current().progress()["files_total"] == 0
            model_info, = client.get("/sdapi/v1/sd-models").json()
            assert (model_info["hash"], model_info["sha256"]) == (sha256(model)[:10], sha256(model))
        assert reads == []
    finally:
        file_hashes.current().stop()
        file_hashes._current = previous
