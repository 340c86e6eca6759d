"""The Extras tab's handler, called as the browser's Generate click calls it, on a real job queue with a
tiny ESRGAN-shaped upscale model."""
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from inkwash.nodes.formats.png_metadata import read_png_text
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.jobs import JobQueue
from inkwash.webui.tabs import extras as extras_tab
from tiny_models import write_tiny_esrgan

MODEL = "4x-tiny-esrgan"


@pytest.fixture
def ctx(folders, registry, tmp_path, one_thread, fresh_model_cache):
    write_tiny_esrgan(folders.models_dir / "upscale_models", MODEL + ".pth")
    hub = EventHub()
    queue = JobQueue(tmp_path / "data" / "jobs.db", registry, hub)
    queue.start()
    yield ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=tmp_path / "data")
    queue.close()


def form(**changes):
    values = {"resize_mode": "Scale by", "upscaling_resize": 2, "upscaling_resize_w": 512, "upscaling_resize_h": 512,
              "upscaling_crop": True, "upscaler_1": MODEL, "upscaler_2": "None", "extras_upscaler_2_visibility": 0}
    values.update(changes)
    return values


def picture(path, size=(10, 8), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def run_to_end(ctx, *args):
    updates = list(extras_tab.upscale(ctx, *args))
    progress, gallery, info = updates[-1]
    return progress, gallery, info


def test_single_image_is_upscaled_saved_and_in_the_history(ctx, tmp_path):
    source = picture(tmp_path / "a.png")
    with Image.open(source) as opened:  # a generated picture, with its infotext
        pnginfo = PngInfo()
        pnginfo.add_text("parameters", "a red circle\nSteps: 2, Seed: 7, Size: 10x8")
        opened.save(source, pnginfo=pnginfo)
    progress, gallery, info = run_to_end(ctx, "Single image", source, None, form())
    assert "Done" in progress
    assert info == f"Postprocess upscale by: 2, Postprocess upscaler: {MODEL}"
    (path,) = gallery
    assert Image.open(path).size == (20, 16)
    assert Path(path).parent == ctx.folders.output_dir / "extras"
    texts = read_png_text(path)  # A1111's chunks: the source's parameters, the upscale's as "extras"
    assert texts["parameters"] == "a red circle\nSteps: 2, Seed: 7, Size: 10x8"
    assert texts["extras"] == info and "UpscaleModelLoader" in texts["prompt"]
    (job,) = ctx.queue.history()
    assert job.status == "success"
    assert {n["class_type"] for n in job.workflow.values()} >= {"UpscaleModelLoader", "ImageUpscaleWithModel"}


def test_batch_of_files_scaled_to_a_size_with_a_second_upscaler(ctx, tmp_path):
    files = [picture(tmp_path / "a.png", (10, 8), 1), picture(tmp_path / "b.png", (6, 12), 2)]
    changes = {"resize_mode": "Scale to", "upscaling_resize_w": 16, "upscaling_resize_h": 16, "upscaling_crop": True,
               "upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.5}
    _, gallery, info = run_to_end(ctx, "Batch from files", None, files, form(**changes))
    assert [Image.open(p).size for p in gallery] == [(16, 16), (16, 16)]
    assert "Postprocess upscale to: 16x16" in info and "Postprocess upscaler 2: Lanczos" in info
    (job,) = ctx.queue.history()  # one job for the batch
    assert [n["class_type"] for n in job.workflow.values()].count("ImageBlend") == 2


def test_a_folders_images_are_upscaled_and_its_other_files_passed_over(ctx, tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    uploaded = [picture(folder / "b.png", (6, 4), 1), picture(folder / "a.JPG", (5, 5), 2), str(folder / "notes.txt")]
    (folder / "notes.txt").write_text("not a picture")
    _, gallery, _ = run_to_end(ctx, "Batch from folder", None, None, form(upscaler_1="Nearest"), uploaded)
    assert [Image.open(p).size for p in gallery] == [(10, 10), (12, 8)]  # a.JPG, then b.png
    with pytest.raises(gr.Error, match="choose a folder that holds image files"):
        list(extras_tab.upscale(ctx, "Batch from folder", None, None, form(), [str(folder / "notes.txt")]))


def test_the_batch_source_ignores_the_single_image_and_vice_versa(ctx, tmp_path):
    single = picture(tmp_path / "single.png", (4, 4))
    with pytest.raises(gr.Error, match="drop one or more image files"):
        list(extras_tab.upscale(ctx, "Batch from files", single, [], form()))
    with pytest.raises(gr.Error, match="drop an image"):
        list(extras_tab.upscale(ctx, "Single image", None, [single], form()))


def test_bad_input_is_refused_naming_it_before_queueing(ctx, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(gr.Error, match="notes.png: not a readable image"):
        list(extras_tab.upscale(ctx, "Batch from files", None, [str(not_image)], form()))
    with pytest.raises(gr.Error, match="upscaler_1: unknown upscaler 'gone'"):
        list(extras_tab.upscale(ctx, "Single image", picture(tmp_path / "a.png"), None, form(upscaler_1="gone")))
    assert ctx.queue.history() == [] and ctx.queue.pending() == []


def test_refresh_lists_new_model_files(ctx):
    write_tiny_esrgan(ctx.folders.models_dir / "upscale_models", "2x-other.safetensors")
    first, second = extras_tab.refreshed_upscalers(ctx, MODEL, "missing")
    assert first.choices == second.choices
    assert [c[0] for c in first.choices] == ["None", "Lanczos", "Nearest", "2x-other", MODEL]
    assert first.value == MODEL and second.value == "None"
