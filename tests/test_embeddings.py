"""Textual-inversion embeddings (`embedding:NAME`, A1111 and SDXL files) and BREAK in the token windows.

An embedding whose vectors are the token embeddings of words must encode exactly as those words: that
checks the vectors land at the right positions, in the right encoder, with position embeddings,
weights and the pooled output unchanged.
"""
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from inkwash.nodes.runtime import embeddings, text_encode
from inkwash.nodes.runtime.embeddings import EmbeddingError
from tiny_models import tiny_sd1, tiny_sd2, tiny_sdxl

BREAK = ("BREAK", -1.0)


@pytest.fixture(scope="module")
def sd1():
    return tiny_sd1()[1]


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl()[1]


@pytest.fixture
def embedding_dir(folders):
    path = folders.models_dir / "embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def word_vectors(clip, words: str, encoder: int = 0) -> torch.Tensor:
    """The token embeddings of `words` in one of the clip's encoders: [n, D]."""
    ids = clip.tokenizers[encoder](words, add_special_tokens=False).input_ids
    return clip.encoders[encoder].get_input_embeddings().weight[ids].detach().clone()


def save_a1111_pt(path, vectors: torch.Tensor, step: int = 1500):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(vectors)},
                "name": path.stem, "step": step, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "base"}, path)


def encoded(clip, prompt: str):
    cond, = text_encode.encode(clip, prompt)
    return cond


def assert_same(a, b):
    assert a.embeds.shape == b.embeds.shape
    assert torch.allclose(a.embeds, b.embeds, atol=1e-6)
    if a.pooled is not None or b.pooled is not None:
        assert torch.allclose(a.pooled, b.pooled, atol=1e-6)


# -- embeddings in prompts --------------------------------------------------------------------------------

def test_a1111_pt_embedding_encodes_exactly_as_the_word_it_holds(sd1, embedding_dir):
    save_a1111_pt(embedding_dir / "crimson.pt", word_vectors(sd1, "red"))
    expected = encoded(sd1, "a red, cat")
    assert_same(encoded(sd1, "a embedding:crimson, cat"), expected)
    assert_same(encoded(sd1, "a embedding:crimson.pt, cat"), expected)
    assert not torch.allclose(encoded(sd1, "a blue, cat").embeds, expected.embeds, atol=1e-3)


def test_multi_vector_safetensors_embedding_takes_one_position_per_vector(sd1, embedding_dir):
    save_file({"emb_params": word_vectors(sd1, "red cat")}, embedding_dir / "redcat.safetensors")
    window, = text_encode._token_windows(sd1.tokenizers[0], [("a embedding:redcat in snow", 1.0)], "clip_l", 32)
    assert sorted(window.vectors) == [2, 3]
    assert torch.equal(torch.stack([window.vectors[2], window.vectors[3]]), word_vectors(sd1, "red cat"))
    assert_same(encoded(sd1, "a embedding:redcat in snow"), encoded(sd1, "a red cat in snow"))


def test_single_tensor_file_of_any_key_and_a_one_dimensional_vector(sd1, embedding_dir):
    torch.save({"<my-token>": word_vectors(sd1, "red")[0]}, embedding_dir / "learned_embeds.bin")
    assert embeddings.load("learned_embeds").count == 1
    assert_same(encoded(sd1, "embedding:learned_embeds cat"), encoded(sd1, "red cat"))


def test_embedding_in_a_subfolder_is_found_by_its_name(sd1, embedding_dir):
    (embedding_dir / "styles").mkdir()
    save_a1111_pt(embedding_dir / "styles" / "crimson.pt", word_vectors(sd1, "red"))
    assert_same(encoded(sd1, "embedding:crimson cat"), encoded(sd1, "red cat"))
    assert_same(encoded(sd1, "embedding:styles/crimson cat"), encoded(sd1, "red cat"))


def test_weight_on_an_embedding_applies_to_its_vectors(sd1, embedding_dir):
    save_a1111_pt(embedding_dir / "crimson.pt", word_vectors(sd1, "red"))
    weighted, = text_encode.encode_segments(sd1, [("a ", 1.0), ("embedding:crimson", 1.5), (" cat", 1.0)])
    expected, = text_encode.encode_segments(sd1, [("a ", 1.0), ("red", 1.5), (" cat", 1.0)])
    assert_same(weighted, expected)
    assert not torch.allclose(weighted.embeds, encoded(sd1, "a red cat").embeds, atol=1e-4)
    # through the emphasis syntax too
    assert_same(encoded(sd1, "a (embedding:crimson:1.5) cat"), encoded(sd1, "a (red:1.5) cat"))


def test_sdxl_pair_sends_clip_l_to_the_first_encoder_and_clip_g_to_the_second(sdxl, embedding_dir):
    save_file({"clip_l": word_vectors(sdxl, "red", 0), "clip_g": word_vectors(sdxl, "blue", 1)},
              embedding_dir / "pair.safetensors")
    cond = encoded(sdxl, "a embedding:pair cat")
    red, blue = encoded(sdxl, "a red cat"), encoded(sdxl, "a blue cat")
    width_l = sdxl.encoders[0].config.hidden_size
    assert torch.allclose(cond.embeds[..., :width_l], red.embeds[..., :width_l], atol=1e-6)
    assert torch.allclose(cond.embeds[..., width_l:], blue.embeds[..., width_l:], atol=1e-6)
    assert torch.allclose(cond.pooled, blue.pooled, atol=1e-6)  # CLIP-G pools at the end token


def test_sdxl_refiner_takes_the_clip_g_set(embedding_dir):
    clip = tiny_sdxl(refiner=True)[1]
    save_file({"clip_l": torch.randn(1, 32), "clip_g": word_vectors(clip, "blue", 0)},
              embedding_dir / "pair.safetensors")
    assert_same(encoded(clip, "a embedding:pair cat"), encoded(clip, "a blue cat"))


def test_embedding_that_would_straddle_a_chunk_moves_whole_to_the_next(sd1, embedding_dir):
    save_file({"emb_params": word_vectors(sd1, "red cat")}, embedding_dir / "redcat.safetensors")
    cats = "cat " * 74
    windows = text_encode._token_windows(sd1.tokenizers[0], [(cats + "embedding:redcat", 1.0)], "clip_l", 32)
    assert len(windows) == 2 and windows[0].vectors == {} and sorted(windows[1].vectors) == [1, 2]
    assert windows[0].ids[75] == sd1.tokenizers[0].eos_token_id  # 74 cats, end token, one pad
    expected, = text_encode.encode_segments(sd1, [(cats, 1.0), BREAK, ("red cat", 1.0)])
    assert_same(encoded(sd1, cats + "embedding:redcat"), expected)


def test_embedding_longer_than_a_chunk_is_split(sd1, embedding_dir):
    save_file({"emb_params": torch.randn(80, 32)}, embedding_dir / "long.safetensors")
    windows = text_encode._token_windows(sd1.tokenizers[0], [("cat embedding:long", 1.0)], "clip_l", 32)
    assert [len(w.vectors) for w in windows] == [74, 6]
    assert encoded(sd1, "cat embedding:long").embeds.shape == (1, 154, 32)


def test_embedding_files_are_cached_until_they_change(sd1, embedding_dir):
    path = embedding_dir / "crimson.pt"
    save_a1111_pt(path, word_vectors(sd1, "red"))
    first = embeddings.load("crimson")
    assert embeddings.load("crimson.pt") is first
    save_a1111_pt(path, word_vectors(sd1, "red cat"), step=2000)
    second = embeddings.load("crimson")
    assert second is not first and second.count == 2 and second.info["step"] == 2000


# -- BREAK ------------------------------------------------------------------------------------------------

def test_break_starts_a_new_window_equal_to_encoding_the_parts_apart(sd1):
    cond, = text_encode.encode_segments(sd1, [("a cat", 1.0), BREAK, ("in snow", 1.0)])
    assert cond.embeds.shape == (1, 154, 32)
    expected = torch.cat([encoded(sd1, "a cat").embeds, encoded(sd1, "in snow").embeds], dim=1)
    assert torch.allclose(cond.embeds, expected, atol=1e-6)
    assert_same(encoded(sd1, "a cat BREAK in snow"), cond)  # the emphasis parser emits the segment


def test_break_on_sdxl_splits_both_encoders_alike_and_pools_the_first_window(sdxl):
    cond, = text_encode.encode_segments(sdxl, [("a cat", 1.0), BREAK, ("in snow", 1.0)])
    first, second = encoded(sdxl, "a cat"), encoded(sdxl, "in snow")
    assert torch.allclose(cond.embeds, torch.cat([first.embeds, second.embeds], dim=1), atol=1e-6)
    assert torch.allclose(cond.pooled, first.pooled, atol=1e-6)


def test_break_windows_follow_a1111(sd1):
    tokenizer = sd1.tokenizers[0]

    def window_count(segments):
        return len(text_encode._token_windows(tokenizer, segments))

    assert window_count([("cat " * 75, 1.0), BREAK, ("dog", 1.0)]) == 2  # a full chunk is not padded again
    assert window_count([BREAK, ("dog", 1.0)]) == 2  # a leading BREAK gives an empty window
    assert window_count([("dog", 1.0), BREAK]) == 1  # nothing follows a trailing one
    assert window_count([("dog", 1.0), BREAK, BREAK, ("cat", 1.0)]) == 3


# -- errors -----------------------------------------------------------------------------------------------

def test_unknown_embedding_is_a_warning_naming_the_folder_and_the_text_encodes_without_it(
        sd1, embedding_dir, caplog):
    with caplog.at_level("WARNING", logger="inkwash.nodes"):
        without = encoded(sd1, "a embedding:nowhere, cat")
    assert_same(without, encoded(sd1, "a cat"))  # as ComfyUI, the whole word goes, comma included
    warning, = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "embedding 'nowhere' not found in" in warning.getMessage()
    assert str(embedding_dir) in warning.getMessage() and "encoded without it" in warning.getMessage()


def test_traversal_is_refused(sd1, embedding_dir):
    with pytest.raises(EmbeddingError, match="leaves its folder"):
        encoded(sd1, "embedding:../checkpoints/model")


def test_corrupt_files_are_clear_errors(sd1, embedding_dir):
    (embedding_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(EmbeddingError, match=r"embedding 'broken': .*not a readable \.safetensors"):
        encoded(sd1, "embedding:broken")
    save_a1111_pt(embedding_dir / "cut.pt", torch.randn(2, 32))
    data = (embedding_dir / "cut.pt").read_bytes()
    (embedding_dir / "cut.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(EmbeddingError, match=r"embedding 'cut' \(cut\.pt\): not a readable embedding file"):
        encoded(sd1, "embedding:cut")
    save_file({"a": torch.randn(1, 32), "b": torch.randn(1, 32)}, embedding_dir / "two.safetensors")
    with pytest.raises(EmbeddingError, match="holds 2 tensors"):
        encoded(sd1, "embedding:two")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_python_objects_is_refused(sd1, embedding_dir):
    torch.save({"string_to_param": {"*": Payload()}}, embedding_dir / "evil.pt")
    with pytest.raises(EmbeddingError, match="refused"):
        encoded(sd1, "embedding:evil")


def test_wrong_width_says_both_widths(sd1, embedding_dir):
    save_a1111_pt(embedding_dir / "sd1_style.pt", torch.randn(1, 768))
    with pytest.raises(EmbeddingError, match="embedding 'sd1_style' has 768-wide vectors, this CLIP takes 32"):
        encoded(sd1, "embedding:sd1_style")


def test_sdxl_pair_on_sd2_is_refused(embedding_dir):
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)}, embedding_dir / "pair.safetensors")
    with pytest.raises(EmbeddingError, match="has vectors for clip_l and clip_g only"):
        encoded(tiny_sd2()[1], "embedding:pair")


# -- bare names, listings ---------------------------------------------------------------------------------

def test_mark_names_rewrites_bare_names_as_a1111_finds_them():
    names = ["EasyNegative.safetensors", "crimson.pt", "styles/ink-wash.pt", "crimson_v2.pt"]
    assert embeddings.mark_names("easynegative, a (crimson:1.2) cat, ink-wash", names) == \
        "embedding:EasyNegative, a (embedding:crimson:1.2) cat, embedding:styles/ink-wash"
    assert embeddings.mark_names("[dog:crimson:0.5] crimson_v2", names) == \
        "[dog:embedding:crimson:0.5] embedding:crimson_v2"
    untouched = "crimsons crimson-red embedding:crimson <lora:crimson:0.8> mycrimson"
    assert embeddings.mark_names(untouched, names) == untouched
    assert embeddings.mark_names("crimson", []) == "crimson"


def test_marked_prompt_encodes_with_the_embedding(sd1, embedding_dir, folders):
    save_a1111_pt(embedding_dir / "crimson.pt", word_vectors(sd1, "red"))
    prompt = embeddings.mark_names("a Crimson cat", folders.list("embeddings"))
    assert_same(encoded(sd1, prompt), encoded(sd1, "a red cat"))


def test_embedding_routes_list_the_names(sd1, embedding_dir, folders, tmp_path):
    from inkwash.webui import a1111_api, comfy_api
    from inkwash.webui.context import ServerContext

    save_a1111_pt(embedding_dir / "crimson.pt", word_vectors(sd1, "red"))
    (embedding_dir / "xl").mkdir()
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)},
              embedding_dir / "xl" / "pair.safetensors")
    (embedding_dir / "broken.safetensors").write_bytes(b"junk")
    ctx = ServerContext(queue=None, hub=None, folders=folders, registry={}, data_dir=tmp_path / "data")
    app = FastAPI()
    app.include_router(comfy_api.router(ctx))
    app.include_router(a1111_api.router(ctx))
    with TestClient(app) as client:
        assert client.get("/embeddings").json() == ["broken", "crimson", "xl/pair"]
        listing = client.get("/sdapi/v1/embeddings").json()
    assert listing["loaded"] == {
        "crimson": {"step": 1500, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "base", "shape": 32, "vectors": 1},
        "pair": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 2048, "vectors": 2}}
    assert list(listing["skipped"]) == ["broken"]


def test_tab_and_a1111_prompts_get_bare_names_marked(sd1, embedding_dir):
    from inkwash.webui import generation

    save_a1111_pt(embedding_dir / "crimson.pt", word_vectors(sd1, "red"))
    params = generation.resolve(generation.GenerationParams(prompt="a crimson cat", negative_prompt="(Crimson:1.2)",
                                                            checkpoint="model.safetensors"))
    workflow = generation.txt2img_workflow(params)
    assert workflow["6"]["inputs"]["text"] == "a embedding:crimson cat"
    assert workflow["7"]["inputs"]["text"] == "(embedding:crimson:1.2)"


def test_load_by_name_and_a_bare_reference_without_a_name(embedding_dir):
    save_a1111_pt(embedding_dir / "crimson.pt", torch.randn(3, 32))
    assert embeddings.load("crimson").count == 3
    with pytest.raises(EmbeddingError, match="embedding 'crimson,' not found"):
        embeddings.load("crimson,")
    assert embeddings.split_text("a embedding:, cat") == ["a ", " cat"]  # nothing named: a warning
