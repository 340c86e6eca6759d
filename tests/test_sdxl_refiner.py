"""SDXL: CLIPTextEncodeSDXL / CLIPTextEncodeSDXLRefiner and the size and aesthetic-score conditioning
they carry to the UNet, and base-then-refiner (KSamplerAdvanced handing over leftover noise) as the tabs
and the A1111 API build it, on tiny SDXL base and refiner checkpoint files."""
import json

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from inkwash.nodes.core.conditioning import CLIPTextEncode, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner
from inkwash.nodes.executor import Executor
from inkwash.nodes.registry import object_info
from inkwash.nodes.formats import prompt_syntax
from inkwash.nodes.runtime import sampling
from inkwash.nodes.formats import file_hashes
from inkwash.nodes.formats.png_metadata import infotext_from_workflow, parse_infotext, read_png_metadata
from inkwash.webui import generation as gen
from inkwash.webui.a1111_api import router
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.generation import BadRequest, GenerationParams
from inkwash.webui.jobs import JobQueue
from inkwash.webui.tabs.generate import build_plan
from PIL import Image
from tiny_models import tiny_sd1, tiny_sdxl, write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread", "fresh_model_cache")

BASE, REFINER = "tiny-sdxl.safetensors", "tiny-sdxl-refiner.safetensors"


@pytest.fixture
def sdxl_files(folders):
    """Tiny SDXL base and refiner checkpoints in this test's checkpoints folder."""
    folder = folders.models_dir / "checkpoints"
    folder.mkdir(parents=True)
    write_tiny_checkpoint(folder, BASE, tiny_sdxl())
    return folder, write_tiny_checkpoint(folder, REFINER, tiny_sdxl(refiner=True, seed=1))


def small(**changes) -> GenerationParams:
    values = {"prompt": "a red circle", "negative_prompt": "blurry", "checkpoint": BASE, "sampler_name": "euler",
              "steps": 4, "cfg_scale": 5.0, "seed": 7, "width": 64, "height": 64}
    values.update(changes)
    return GenerationParams(**values)


def image_of(folders, executor, workflow, events=None):
    result = executor.execute(workflow, on_event=(lambda n, d: events.append((n, d))) if events is not None else None)
    assert result.status == "success", result.error
    entry = result.outputs["9"]["images"][0]
    path = folders.output_dir / entry["subfolder"] / entry["filename"]
    return path, np.asarray(Image.open(path).convert("RGB"), dtype=int)


# -- the SDXL conditioning nodes --------------------------------------------------------------------------

def test_sdxl_nodes_declare_comfyui_inputs(registry):
    info = object_info(registry)
    assert info["CLIPTextEncodeSDXL"]["input_order"]["required"] == [
        "clip", "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"]
    assert info["CLIPTextEncodeSDXLRefiner"]["input_order"]["required"] == ["ascore", "width", "height", "text", "clip"]
    assert info["CLIPTextEncodeSDXLRefiner"]["input"]["required"]["ascore"][1]["default"] == 6.0
    assert info["CLIPTextEncodeSDXL"]["output"] == ["CONDITIONING"]


def test_sdxl_encoder_gives_each_clip_its_own_prompt():
    _, clip, _ = tiny_sdxl()
    l_width = clip.encoders[0].config.hidden_size
    sizes = {"width": 512, "height": 768, "crop_w": 8, "crop_h": 16, "target_width": 1024, "target_height": 1536}
    (same,) = CLIPTextEncodeSDXL().run(clip, text_g="a cat", text_l="a cat", **sizes)
    (plain,) = CLIPTextEncode().run("a cat", clip)
    assert torch.equal(same[0].embeds, plain[0].embeds) and torch.equal(same[0].pooled, plain[0].pooled)
    assert same[0].extra == sizes

    (split,) = CLIPTextEncodeSDXL().run(clip, text_g="a cat", text_l="a dog", **sizes)
    (dog,) = CLIPTextEncode().run("a dog", clip)
    assert torch.equal(split[0].embeds[..., :l_width], dog[0].embeds[..., :l_width])
    assert torch.equal(split[0].embeds[..., l_width:], plain[0].embeds[..., l_width:])
    assert torch.equal(split[0].pooled, plain[0].pooled)  # pooled comes from CLIP-G, so from text_g

    # a longer text_g: text_l is padded with the empty prompt's window, as ComfyUI pads its tokens
    (long,) = CLIPTextEncodeSDXL().run(clip, text_g="a cat " * 50, text_l="a dog", **sizes)
    (empty,) = CLIPTextEncode().run("", clip)
    assert long[0].embeds.shape == (1, 154, clip.encoders[0].config.hidden_size + clip.encoders[1].config.hidden_size)
    assert torch.equal(long[0].embeds[:, 77:, :l_width], empty[0].embeds[..., :l_width])

    # prompt editing on one side: one Cond per text it schedules, each with the other side's features
    (scheduled,) = CLIPTextEncodeSDXL().run(clip, text_g="a [cat:dog:0.5]", text_l="a bird", **sizes)
    (bird,) = CLIPTextEncode().run("a bird", clip)
    assert [c.extra[prompt_syntax.SCHEDULE_KEY][1] for c in scheduled] == ["a cat", "a dog"]
    assert all(torch.equal(c.embeds[..., :l_width], bird[0].embeds[..., :l_width]) and c.extra["width"] == 512
               for c in scheduled)
    with pytest.raises(ValueError, match="both text_g and text_l"):
        CLIPTextEncodeSDXL().run(clip, text_g="[a:b:0.5]", text_l="[c:d:0.5]", **sizes)
    with pytest.raises(ValueError, match="SDXL CLIP"):
        CLIPTextEncodeSDXL().run(tiny_sd1()[1], text_g="a", text_l="b", **sizes)


def test_sdxl_refiner_encoder_carries_the_aesthetic_score():
    _, clip, _ = tiny_sdxl(refiner=True)
    (cond,) = CLIPTextEncodeSDXLRefiner().run(ascore=2.5, width=640, height=512, text="a cat", clip=clip)
    (plain,) = CLIPTextEncode().run("a cat", clip)
    assert torch.equal(cond[0].embeds, plain[0].embeds) and cond[0].pooled is not None
    assert cond[0].extra == {"aesthetic_score": 2.5, "width": 640, "height": 512}
    # the refiner's CLIP-G takes text_g in CLIPTextEncodeSDXL
    (g_only,) = CLIPTextEncodeSDXL().run(clip, 1024, 1024, 0, 0, 1024, 1024, text_g="a cat", text_l="a dog")
    assert torch.equal(g_only[0].embeds, plain[0].embeds)


def _sample(model, positive, negative, seed=3):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return sampling.sample(model, positive, negative, latent, seed, 2, 5.0, "euler", "normal")["samples"]


def test_size_and_aesthetic_conditioning_change_what_the_unet_makes():
    model, clip, _ = tiny_sdxl()
    encode = CLIPTextEncodeSDXL()
    (negative,) = encode.run(clip, 1024, 1024, 0, 0, 1024, 1024, "", "")
    (large,) = encode.run(clip, 1024, 1024, 0, 0, 1024, 1024, "a cat", "a cat")
    (cropped,) = encode.run(clip, 1024, 1024, 256, 256, 1024, 1024, "a cat", "a cat")
    assert not torch.allclose(_sample(model, large, negative), _sample(model, cropped, negative))

    refiner_model, refiner_clip, _ = tiny_sdxl(refiner=True)
    encode = CLIPTextEncodeSDXLRefiner()
    (low,) = encode.run(2.5, 64, 64, "", refiner_clip)
    (high,) = encode.run(6.0, 64, 64, "a cat", refiner_clip)
    (higher,) = encode.run(9.0, 64, 64, "a cat", refiner_clip)
    assert not torch.allclose(_sample(refiner_model, high, low), _sample(refiner_model, higher, low))
    # without a score and size the sampler takes ComfyUI's defaults: 6 (positive), 2.5 (negative), the image size
    (bare_positive,), (bare_negative,) = (CLIPTextEncode().run(text, refiner_clip) for text in ("a cat", ""))
    assert torch.equal(_sample(refiner_model, high, low), _sample(refiner_model, bare_positive, bare_negative))


# -- base then refiner --------------------------------------------------------------------------------------

def test_the_shipped_refiner_workflow_is_what_the_option_builds():
    shipped = gen.template("txt2img_refiner")
    params = GenerationParams(prompt=shipped["6"]["inputs"]["text"], checkpoint="sd_xl_base_1.0.safetensors",
                              sampler_name="euler", scheduler="normal", steps=25, cfg_scale=7.0, seed=42,
                              width=1024, height=1024, refiner_checkpoint="sd_xl_refiner_1.0.safetensors",
                              refiner_switch_at=0.8)
    assert gen.txt2img_workflow(params) == shipped
    base, refiner = shipped["3"]["inputs"], shipped["33"]["inputs"]
    assert (base["start_at_step"], base["end_at_step"], base["return_with_leftover_noise"]) == (0, 20, "enable")
    assert (refiner["add_noise"], refiner["start_at_step"], refiner["latent_image"]) == ("disable", 20, ["3", 0])
    assert shipped["31"]["class_type"] == "CLIPTextEncodeSDXLRefiner" and shipped["31"]["inputs"]["ascore"] == 6.0
    assert shipped["32"]["inputs"]["ascore"] == 2.5 and shipped["8"]["inputs"]["samples"] == ["33", 0]
    info = parse_infotext(infotext_from_workflow(shipped, "9", model_hash=lambda name: "0123456789"))
    assert info["Model"] == "sd_xl_base_1.0" and info["Steps"] == "25" and "Denoising strength" not in info
    assert info["Refiner"] == "sd_xl_refiner_1.0 [0123456789]" and info["Refiner switch at"] == "0.8"


def test_refiner_takes_over_at_the_switch(registry, folders, sdxl_files):
    _, refiner_file = sdxl_files
    executor = Executor(registry)
    _, base_only = image_of(folders, executor, gen.txt2img_workflow(gen.resolve(small())))
    workflow = gen.txt2img_workflow(gen.resolve(small(refiner_checkpoint=REFINER, refiner_switch_at=0.5)))
    events = []
    path, refined = image_of(folders, executor, workflow, events)
    assert refined.shape == (64, 64, 3) and not np.array_equal(refined, base_only)
    steps = {node: [d["value"] for n, d in events if n == "progress" and d["node"] == node] for node in ("3", "33")}
    assert steps == {"3": [1, 2], "33": [1, 2]}  # base: steps 0-1 of 4, refiner: steps 2-3
    info = parse_infotext(read_png_metadata(path)["parameters"])
    assert info["Refiner"] == f"tiny-sdxl-refiner [{file_hashes.current().wait_for(refiner_file)}]"
    assert info["Refiner switch at"] == "0.5" and info["Model"] == "tiny-sdxl" and info["Seed"] == "7"

    # the same as a KSamplerAdvanced pair built by hand, ComfyUI's way
    encode = {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {"width": 64, "height": 64, "clip": ["30", 1]}}
    common = {"noise_seed": 7, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
              "noise_rule": "a1111_nv"}  # the tabs' rule
    by_hand = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": BASE}},
        "30": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": REFINER}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "31": {**encode, "inputs": {**encode["inputs"], "text": "a red circle", "ascore": 6.0}},
        "32": {**encode, "inputs": {**encode["inputs"], "text": "blurry", "ascore": 2.5}},
        "3": {"class_type": "KSamplerAdvanced", "inputs": {
            **common, "model": ["4", 0], "add_noise": "enable", "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0], "start_at_step": 0, "end_at_step": 2, "return_with_leftover_noise": "enable"}},
        "33": {"class_type": "KSamplerAdvanced", "inputs": {
            **common, "model": ["30", 0], "add_noise": "disable", "positive": ["31", 0], "negative": ["32", 0],
            "latent_image": ["3", 0], "start_at_step": 2, "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["33", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "by_hand"}},
    }
    _, manual = image_of(folders, Executor(registry), by_hand)
    assert np.array_equal(manual, refined)

    # switching at the end is the base model alone
    at_end = gen.txt2img_workflow(gen.resolve(small(refiner_checkpoint=REFINER, refiner_switch_at=1.0)))
    assert at_end == gen.txt2img_workflow(gen.resolve(small()))
    _, unrefined = image_of(folders, Executor(registry), at_end)
    assert np.array_equal(unrefined, base_only)


def test_refiner_with_img2img_batches_and_hires_fix():
    img2img = gen.img2img_workflow(gen.resolve(small(refiner_checkpoint=REFINER, denoising_strength=0.5,
                                                     batch_size=2, steps=10)), "init.png")
    for branch in ("", "_1"):  # each image of the batch is handed over on its own branch
        base, refiner = img2img[f"3{branch}"]["inputs"], img2img[f"33{branch}"]["inputs"]
        assert (base["start_at_step"], base["end_at_step"], refiner["start_at_step"]) == (5, 9, 9)
        assert img2img[f"8{branch}"]["inputs"]["samples"] == [f"33{branch}", 0]
    info = parse_infotext(infotext_from_workflow(img2img, "9_1"))
    assert info["Refiner switch at"] == "0.8" and info["Denoising strength"] == "0.5" and info["Seed"] == "8"

    # with hires fix the refiner finishes the second pass, as A1111 does by default
    hires = gen.txt2img_workflow(gen.resolve(small(refiner_checkpoint=REFINER, enable_hr=True, steps=4,
                                                   hr_second_pass_steps=10, denoising_strength=0.6)))
    assert hires["3"]["class_type"] == "KSampler"
    assert hires["17"]["class_type"] == "KSamplerAdvanced" and hires["33"]["inputs"]["latent_image"] == ["17", 0]
    assert (hires["17"]["inputs"]["start_at_step"], hires["33"]["inputs"]["start_at_step"]) == (4, 9)
    assert hires["31"]["inputs"]["width"] == 128  # the refiner is told the second pass's size
    info = parse_infotext(infotext_from_workflow(hires, "9"))
    assert (info["Steps"], info["Size-1"], info["Hires steps"], info["Denoising strength"]) == ("4", "64", "10", "0.6")
    assert info["Refiner switch at"] == "0.8333"  # 5 of the 6 steps the second pass runs

    with pytest.raises(BadRequest) as caught:
        gen.resolve(small(refiner_checkpoint=REFINER, init_image=Image.new("RGB", (64, 64)),
                          mask=Image.new("L", (64, 64), 255)))
    assert caught.value.field == "refiner_checkpoint"


def test_refiner_from_the_a1111_api_and_the_tabs(folders, sdxl_files, registry, tmp_path):
    hub = EventHub()
    queue = JobQueue(tmp_path / "jobs.db", registry, hub)
    queue.start()
    ctx = ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=tmp_path)
    try:
        app = FastAPI()
        app.include_router(router(ctx))
        body = {"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 3, "send_images": False,
                "override_settings": {"sd_model_checkpoint": "tiny-sdxl"},
                "refiner_checkpoint": "tiny-sdxl-refiner", "refiner_switch_at": 0.75}
        with TestClient(app) as client:
            response = client.post("/sdapi/v1/txt2img", json=body)
            assert response.status_code == 200, response.text
            info = json.loads(response.json()["info"])
            assert info["extra_generation_params"]["Refiner switch at"] == "0.75"
            assert info["extra_generation_params"]["Refiner"].startswith("tiny-sdxl-refiner [")
            response = client.post("/sdapi/v1/txt2img", json={**body, "refiner_checkpoint": "None"})
            assert "Refiner" not in response.json()["info"]
    finally:
        queue.close()
    plan = build_plan(ctx, "txt2img", {"checkpoint": BASE, "prompt": "x", "steps": 4, "width": 64, "height": 64,
                                       "refiner_checkpoint": REFINER, "refiner_switch_at": 0.5})
    assert plan.workflows[0]["30"]["inputs"]["ckpt_name"] == REFINER
    plan = build_plan(ctx, "img2img", {"checkpoint": BASE, "init_image": Image.new("RGB", (64, 64)),
                                       "refiner_checkpoint": "None"})
    assert "30" not in plan.workflows[0]
