"""PNG text chunks (ComfyUI prompt/workflow, A1111 parameters) and the A1111 infotext format."""
import json
import struct
import zlib

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from inkwash.nodes.runtime import image_files
from inkwash.nodes.formats.png_metadata import (a1111_names, format_infotext, infotext_from_workflow, inkwash_version,
                                                parse_infotext, png_text, quote, read_png_metadata,
                                                read_png_text)

# An infotext as A1111 1.10 writes it.
A1111_TEXT = (
    "masterpiece, best quality, 1girl\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.75, Clip skip: 2, "
    'Lora hashes: "detail: 0123456789ab, style: ba9876543210", Version: v1.10.1'
)
A1111_PARAMS = {
    "Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7, "Seed": 1234567890,
    "Size": "512x768", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly", "Denoising strength": 0.75,
    "Clip skip": 2, "Lora hashes": "detail: 0123456789ab, style: ba9876543210", "Version": "v1.10.1",
}

# ComfyUI's default txt2img graph in API format (script_examples/basic_api_example.py).
DEFAULT_GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 8566257, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "masterpiece best quality girl", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad hands", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


# -- infotext format -------------------------------------------------------------------------------------

def test_format_matches_a1111_exactly():
    assert format_infotext("masterpiece, best quality, 1girl", "lowres, bad anatomy", A1111_PARAMS) == A1111_TEXT


def test_format_drops_none_empty_negative_and_writes_bare_keys():
    text = format_infotext("a cat", "", {"Steps": 4, "Seed": None, "Tiling": "Tiling"})
    assert text == "a cat\nSteps: 4, Tiling"


def test_quote_follows_a1111():
    assert quote("plain") == "plain"
    assert quote("a, b") == '"a, b"'
    assert quote("key: v") == '"key: v"'
    assert quote("two\nlines") == '"two\\nlines"'
    assert quote("ünï, code") == '"ünï, code"'  # not ASCII-escaped, as A1111's ensure_ascii=False


def test_parse_a1111_example():
    parsed = parse_infotext(A1111_TEXT, defaults=False)
    assert parsed == {
        "Prompt": "masterpiece, best quality, 1girl", "Negative prompt": "lowres, bad anatomy",
        "Steps": "20", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7",
        "Seed": "1234567890", "Size-1": "512", "Size-2": "768", "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly", "Denoising strength": "0.75", "Clip skip": "2",
        "Lora hashes": "detail: 0123456789ab, style: ba9876543210", "Version": "v1.10.1",
    }


def test_parse_fills_a1111_defaults():
    parsed = parse_infotext("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    assert parsed["Clip skip"] == "1"
    assert parsed["Schedule type"] == "Automatic"
    assert parsed["RNG"] == "GPU"
    assert parsed["Negative prompt"] == ""


def test_parse_without_parameter_line_is_all_prompt():
    parsed = parse_infotext("just a prompt: with a colon\nsecond line", defaults=False)
    assert parsed == {"Prompt": "just a prompt: with a colon\nsecond line", "Negative prompt": ""}


def test_parse_old_hires_first_pass_size():
    parsed = parse_infotext("x\nSteps: 20, Seed: 1, Size: 1024x1024, First pass size: 0x0")
    assert (parsed["Size-1"], parsed["Size-2"]) == (512, 512)
    assert (parsed["Hires resize-1"], parsed["Hires resize-2"]) == (1024, 1024)


@pytest.mark.parametrize("prompt,negative", [
    ("a cat", ""),
    ("a cat,\nsitting: on a mat", "blurry,\nugly"),
    ("(masterpiece:1.2), <lora:detail:0.8>", "worst quality"),
])
def test_parse_inverts_format(prompt, negative):
    params = {"Steps": "30", "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": "7.5",
              "Seed": "42", "Model": "dream, shaper: v8", "Note": 'said "hi"\nand left', "Version": "inkwash-0.1.0"}
    parsed = parse_infotext(format_infotext(prompt, negative, params), defaults=False)
    assert parsed == {"Prompt": prompt, "Negative prompt": negative, **params}


# -- infotext from an API workflow -----------------------------------------------------------------------

def test_infotext_of_default_graph():
    text = infotext_from_workflow(DEFAULT_GRAPH, "9", size=(512, 512), model_hash=lambda name: "6ce0161689",
                                  version="inkwash-0.1.0")
    assert text == ("masterpiece best quality girl\nNegative prompt: bad hands\n"
                    "Steps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 8, Seed: 8566257, "
                    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: inkwash-0.1.0")


def test_infotext_through_controlnet_clip_skip_and_advanced_sampler():
    graph = json.loads(json.dumps(DEFAULT_GRAPH))
    graph["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": ["20", 0], "steps": 20, "cfg": 7.5, "sampler_name": "dpmpp_2m",
        "scheduler": "karras", "start_at_step": 5, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        "model": ["11", 0], "positive": ["10", 0], "negative": ["10", 1], "latent_image": ["5", 0]}}
    graph["10"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["12", 0], "image": ["13", 0],
        "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    graph["11"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["4", 0], "clip": ["4", 1], "lora_name": "x.safetensors", "strength_model": 1, "strength_clip": 1}}
    graph["14"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["11", 1], "stop_at_clip_layer": -2}}
    graph["6"]["inputs"]["clip"] = ["14", 0]
    graph["7"]["inputs"]["clip"] = ["14", 0]
    graph["20"] = {"class_type": "PrimitiveInt", "inputs": {"value": 100}}
    graph["9"]["inputs"]["images"] = ["15", 0]
    graph["15"] = {"class_type": "ImageScale", "inputs": {
        "image": ["8", 0], "upscale_method": "lanczos", "width": 768, "height": 0, "crop": "disabled"}}

    text = infotext_from_workflow(graph, "9", size=(768, 768), batch_index=2, version="inkwash-0.1.0")
    assert text == ("masterpiece best quality girl <lora:x:1>\nNegative prompt: bad hands\n"
                    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 102, "
                    "Size: 768x768, Model: v1-5-pruned-emaonly, Denoising strength: 0.75, Clip skip: 2, "
                    "Version: inkwash-0.1.0")


def test_a1111_names_read_back_to_the_same_sampler_and_schedule():
    from inkwash.nodes.formats import sampler_names as schedulers
    assert a1111_names("euler", "normal") == ("Euler", "Automatic")
    assert a1111_names("dpmpp_2m", "karras") == ("DPM++ 2M", "Karras")
    assert a1111_names("dpmpp_2m", "normal") == ("DPM++ 2M", "Normal")  # "Automatic" would mean Karras here
    assert a1111_names("res_multistep", "linear_quadratic") == ("res_multistep", "linear_quadratic")
    for sampler in ("euler", "euler_ancestral", "lms", "heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2m", "dpmpp_sde",
                    "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "uni_pc", "lcm"):
        for scheduler in ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"):
            assert schedulers.from_a1111(*a1111_names(sampler, scheduler)) == (sampler, scheduler)


def test_infotext_size_falls_back_to_empty_latent_and_version_defaults():
    text = infotext_from_workflow(DEFAULT_GRAPH, "9")
    assert "Size: 512x512" in text
    assert text.endswith(f"Version: {inkwash_version()}")
    assert inkwash_version().startswith("inkwash-")


def test_infotext_none_without_sampler_and_safe_on_cycles():
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert infotext_from_workflow(graph, "2") is None
    cyclic = {"1": {"class_type": "ImageScale", "inputs": {"image": ["2", 0]}},
              "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    assert infotext_from_workflow(cyclic, "3") is None
    assert infotext_from_workflow(DEFAULT_GRAPH, "missing") is None


def test_infotext_tolerates_odd_values():
    graph = json.loads(json.dumps(DEFAULT_GRAPH))
    graph["3"]["inputs"].update(seed="s", steps=[1, 2, 3], cfg="high", sampler_name=[1, 2, 3], scheduler={},
                                denoise="x")
    graph["6"]["inputs"]["text"] = ["99", 0]  # a link to nowhere
    assert infotext_from_workflow(graph, "9", size=(8, 8), version="v") == (
        "Negative prompt: bad hands\nSize: 8x8, Model: v1-5-pruned-emaonly, Version: v")


def test_infotext_output_parses_back():
    text = infotext_from_workflow(DEFAULT_GRAPH, "9", size=(640, 448))
    parsed = parse_infotext(text)
    assert (parsed["Prompt"], parsed["Negative prompt"]) == ("masterpiece best quality girl", "bad hands")
    assert (parsed["Size-1"], parsed["Size-2"], parsed["Sampler"], parsed["Seed"]) == ("640", "448", "Euler", "8566257")


# -- PNG chunks ------------------------------------------------------------------------------------------

def _png(tmp_path, info: PngInfo, name="x.png"):
    path = tmp_path / name
    Image.new("RGB", (4, 4), "red").save(path, pnginfo=info)
    return path


def test_save_then_read_back_prompt_workflow_parameters(tmp_path):
    workflow = {"last_node_id": 9, "nodes": [{"id": 9, "type": "SaveImage"}], "links": [], "version": 0.4}
    parameters = infotext_from_workflow(DEFAULT_GRAPH, "9", size=(8, 8))
    metadata = png_text(DEFAULT_GRAPH, {"workflow": workflow}, parameters)
    assert list(metadata) == ["prompt", "workflow", "parameters"]
    saved = image_files.save_png(Image.new("RGB", (8, 8)), tmp_path, "ComfyUI", metadata)

    expected = {"prompt": DEFAULT_GRAPH, "workflow": workflow, "parameters": parameters}
    assert read_png_metadata(saved.path) == expected
    assert read_png_metadata(saved.path.read_bytes()) == expected
    assert Image.open(saved.path).text == metadata  # what other programs (PIL, ComfyUI, A1111) read


def test_reads_itxt_ztxt_and_unicode(tmp_path):
    info = PngInfo()
    info.add_text("parameters", "猫, 1girl\nSteps: 20, Seed: 1, Size: 4x4")  # not latin-1: Pillow writes iTXt
    info.add_text("prompt", json.dumps({"1": {"class_type": "X", "inputs": {}}}), zip=True)  # zTXt
    info.add_itxt("workflow", json.dumps({"nodes": []}), zip=True)
    meta = read_png_metadata(_png(tmp_path, info))
    assert meta == {"prompt": {"1": {"class_type": "X", "inputs": {}}}, "workflow": {"nodes": []},
                    "parameters": "猫, 1girl\nSteps: 20, Seed: 1, Size: 4x4"}


def test_missing_or_broken_metadata_reads_as_none(tmp_path):
    info = PngInfo()
    info.add_text("prompt", "{not json")
    assert read_png_metadata(_png(tmp_path, info)) == {"prompt": None, "workflow": None, "parameters": None}
    assert read_png_metadata(b"GIF89a...") == {"prompt": None, "workflow": None, "parameters": None}


def test_truncated_png_keeps_the_chunks_before_the_cut(tmp_path):
    info = PngInfo()
    info.add_text("parameters", "a cat\nSteps: 1, Seed: 2, Size: 4x4")
    data = _png(tmp_path, info).read_bytes()
    assert read_png_metadata(data[: len(data) - 20])["parameters"] == "a cat\nSteps: 1, Seed: 2, Size: 4x4"


def test_text_chunk_inflating_too_far_is_refused(monkeypatch):
    from inkwash.nodes.formats import png_metadata

    monkeypatch.setattr(png_metadata, "MAX_TEXT_BYTES", 1000)
    body = b"prompt\x00\x00" + zlib.compress(b"x" * 100_000)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    with pytest.raises(png_metadata.PngTextTooLarge, match="more than 1000 bytes"):
        read_png_text(png_metadata.PNG_SIGNATURE + chunk)
