"""The Gradio tabs' handlers, called as the browser's events would call them, against a real job queue
and the real core nodes on a tiny SD1-shaped checkpoint (64x64, 2 steps)."""
import json
import re

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from inkwash.nodes.executor import Executor
from inkwash.nodes.registry import object_info
from inkwash.nodes.runtime.checkpoint_save import save_checkpoint
from inkwash.nodes.formats.png_metadata import parse_infotext
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.generation import template
from inkwash.webui.jobs import JobQueue
from inkwash.webui.tabs import allowed_paths, build_ui, history, pnginfo, workflows
from inkwash.webui.generation import depth2img_workflow, is_depth_checkpoint
from inkwash.webui.parameters import GenerationParams
from inkwash.webui.tabs.generate import (check_typed_value, rounding_notes, typed_value_note,
                                         editor_image_and_mask, generate, reuse_seed, select_image, send_image,
                                         workflow_file)
from inkwash.webui.tabs.workflow_files import (WorkflowError, apply_values, form_fields, load_source, load_upload,
                                               save_workflow, workflow_sources)
from tiny_models import tiny_sd1

CKPT = "tiny-sd1.safetensors"


@pytest.fixture
def make_ctx(folders, registry, tmp_path):
    """make_ctx(start=True): a context on a tmp data dir; its queue's worker runs when started."""
    queues = []

    def make(start: bool = True) -> ServerContext:
        hub = EventHub()
        queue = JobQueue(tmp_path / "data" / "jobs.db", registry, hub)
        queues.append(queue)
        if start:
            queue.start()
        return ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=tmp_path / "data")

    yield make
    for queue in queues:
        queue.close()


@pytest.fixture
def ctx(make_ctx, checkpoint):
    return make_ctx()


def form(**changes):
    values = {"checkpoint": CKPT, "prompt": "a red circle", "negative_prompt": "blurry", "sampler_name": "euler",
              "scheduler": "normal", "steps": 2, "cfg_scale": 7.0, "seed": 1234, "width": 64, "height": 64,
              "batch_size": 1, "n_iter": 1}
    values.update(changes)
    return values


def run_to_end(ctx, mode, values):
    updates = list(generate(ctx, mode, values))
    assert updates, "the handler yielded nothing"
    return updates[-1]


def picture(color=(40, 90, 200), size=(64, 64)):
    return Image.new("RGB", size, color)


class Select:
    """What Gradio hands a .select handler."""

    def __init__(self, index):
        self.index = index


def test_txt2img_fills_the_gallery_with_infotext(ctx):
    last = run_to_end(ctx, "txt2img", form(batch_size=2, n_iter=2))
    assert "Done" in last.progress and last.preview is None
    assert len(last.gallery) == 4
    seeds = [image["seed"] for image in last.results["images"]]
    assert seeds == [1234, 1235, 1236, 1237]
    for (path, caption), image in zip(last.gallery, last.results["images"]):
        assert Image.open(path).size == (64, 64)
        info = parse_infotext(image["infotext"])
        assert info["Prompt"] == "a red circle" and info["Negative prompt"] == "blurry"
        assert info["Seed"] == str(image["seed"]) and info["Steps"] == "2" and caption == f"seed {image['seed']}"
    assert last.info == last.results["images"][0]["infotext"]
    # picking the third image shows its infotext and offers the workflow of its iteration
    index, info, saved = select_image(last.results, Select(2))
    assert index == 2 and "Seed: 1236" in info
    assert json.loads(open(saved).read()) == last.results["workflows"][1]
    assert all(job.extra["source"] == "tab" for job in ctx.queue.history())


def test_the_extra_accordion_s_variation_seed_and_random_numbers_reach_the_images(ctx):
    blocks = build_ui(ctx)
    labels = {getattr(block, "label", None) for block in blocks.blocks.values()}
    assert {"Variation seed (-1: random)", "Variation strength", "Resize seed from width (0: off)",
            "Random number generator source", "Eta noise seed delta (ENSD)"} <= labels

    def pictures(**changes):
        last = run_to_end(ctx, "txt2img", form(batch_size=2, **changes))
        return [np.asarray(Image.open(path)) for path, _ in last.gallery], last.results["images"][0]["infotext"]

    (first, second), info = pictures(subseed=99, subseed_strength=1.0)
    assert np.array_equal(first, second)  # seeds 1234 and 1235 both start from the variation seed's noise
    assert "Variation seed: 99, Variation seed strength: 1" in info and "RNG: NV" in info
    (cpu, _), cpu_info = pictures(randn_source="CPU")
    (gpu, _), _ = pictures(randn_source="GPU")
    assert not np.array_equal(cpu, gpu) and "RNG: CPU" in cpu_info


@pytest.mark.parametrize("changes, field", [
    ({"width": 0}, "width"), ({"height": 2056}, "height"), ({"steps": 0}, "steps"), ({"cfg_scale": float("nan")}, "cfg_scale"),
    ({"batch_size": 0}, "batch_size"), ({"denoising_strength": 1.5, "enable_hr": True}, "denoising_strength"),
])
def test_out_of_range_form_values_are_refused_naming_the_field_as_the_api_does(ctx, changes, field):
    with pytest.raises(gr.Error) as caught:
        run_to_end(ctx, "txt2img", form(**changes))
    assert str(caught.value.message).startswith(f"{field}: ")
    assert ctx.queue.history() == []  # nothing was queued


def test_a_size_rounded_down_to_a_multiple_of_8_is_reported(ctx):
    with pytest.warns(UserWarning) as warned:  # gr.Warning outside a Gradio request
        last = run_to_end(ctx, "txt2img", form(width=100, height=64))
    assert [str(w.message) for w in warned if w.category is UserWarning] == ["width 100 was rounded down to 96"]
    assert Image.open(last.gallery[0][0]).size == (96, 64)
    assert rounding_notes(form(width=64, hr_resize_x=100), GenerationParams(width=64, height=64)) == []  # no hires: unused
    hires = GenerationParams(width=64, height=64, enable_hr=True, hr_resize_x=100)
    assert rounding_notes(form(width=64, hr_resize_x=100), hires) == ["hr_resize_x 100 was rounded down to 96"]


def test_a_prompt_lora_not_in_the_folder_is_a_warning_and_the_image_is_made(ctx):
    with pytest.warns(UserWarning) as warned:
        last = run_to_end(ctx, "txt2img", form(prompt="a red circle <lora:nowhere:0.7>"))
    messages = [str(w.message) for w in warned if w.category is UserWarning]
    assert len(messages) == 1 and "LoRA not found" in messages[0] and "nowhere" in messages[0]
    assert len(last.gallery) == 1 and Image.open(last.gallery[0][0]).size == (64, 64)


@pytest.mark.parametrize("name, typed, note", [
    ("width", 0, "width: must be between 64 and 2048 pixels, got 0; set to 64"),
    ("steps", 0, "steps: must be between 1 and 1000, got 0; set to 1"),
    ("steps", 200, "steps: this slider goes from 1 to 150; 200 was set to 150"),
    ("denoising_strength", 1.5, "denoising_strength: must be between 0 and 1, got 1.5; set to 1"),
    ("width", 100, None), ("steps", 20, None), ("width", None, None),
])
def test_a_number_typed_out_of_a_sliders_range_gets_a_note(name, typed, note):
    assert typed_value_note(name, typed) == note
    if note:
        with pytest.warns(UserWarning, match=re.escape(note)):
            check_typed_value(name)(typed)


def test_random_seed_resolves_and_reuse_returns_it(ctx):
    assert reuse_seed(None, 0) == -1
    last = run_to_end(ctx, "txt2img", form(seed=-1))
    seed = last.results["seed"]
    assert seed >= 0 and last.results["images"][0]["seed"] == seed
    assert parse_infotext(last.info)["Seed"] == str(seed)
    assert reuse_seed(last.results, 0) == seed
    assert last.results["workflows"][0]["3"]["inputs"]["seed"] == seed


def test_img2img_runs_on_the_init_image_and_sends_on(ctx):
    last = run_to_end(ctx, "img2img", form(init_image=picture(size=(96, 80)), denoising_strength=0.5, resize_mode=1))
    (path, _), = last.gallery
    assert Image.open(path).size == (64, 64)
    workflow = last.results["workflows"][0]
    assert workflow["3"]["inputs"]["denoise"] == 0.5 and workflow["10"]["class_type"] == "LoadImage"
    assert json.loads(open(last.workflow_file).read()) == workflow  # exactly what ran
    assert parse_infotext(last.info)["Denoising strength"] == "0.5"
    assert send_image(last.results, 0) == (path, "a red circle", "blurry")


def test_interrupt_cancels_the_jobs_of_this_run(make_ctx, checkpoint):
    ctx = make_ctx(start=False)  # the worker never takes them: they wait in the queue
    run = generate(ctx, "txt2img", form(n_iter=2))
    first = next(run)
    assert "Waiting in the queue" in first.progress or "Starting" in first.progress
    assert [job.status for job in ctx.queue.pending()] == ["pending", "pending"]
    from inkwash.webui.tabs.generate import interrupt

    interrupt(ctx, first.results)
    last = list(run)[-1]
    assert "Interrupted after 0 of 2" in last.progress and 'value="0"' in last.progress and last.gallery == []
    assert ctx.queue.pending() == [] and [ctx.queue.get(j).status for j in first.results["jobs"]] == ["cancelled"] * 2


def test_img2img_without_an_image_is_refused_before_queueing(ctx):
    with pytest.raises(gr.Error, match="init"):
        run_to_end(ctx, "img2img", form(init_image=None))
    assert ctx.queue.history() == [] and ctx.queue.pending() == []


def test_inpaint_repaints_only_the_painted_area(ctx):
    background = picture(color=(30, 160, 60)).convert("RGBA")
    painted = np.zeros((64, 64, 4), np.uint8)
    painted[16:48, 16:48] = (255, 45, 122, 255)  # a brush stroke on the editor's layer
    editor = {"background": background, "layers": [Image.fromarray(painted)],
              "composite": Image.alpha_composite(background, Image.fromarray(painted))}
    last = run_to_end(ctx, "inpaint", form(inpaint_image=editor, mask_blur=2, inpainting_fill=1,
                                           denoising_strength=1.0, inpaint_area=0, mask_mode=0))
    (path, _), = last.gallery
    result = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert (result[:8, :8] == (30, 160, 60)).all()  # untouched outside the mask, as A1111 overlays it
    assert np.abs(result[24:40, 24:40] - (30, 160, 60)).mean() > 5  # repainted inside
    assert parse_infotext(last.info)["Mask blur"] == "2"  # A1111's inpainting parameters, added after the run
    workflow = last.results["workflows"][0]
    assert {"SetLatentNoiseMask", "LoadImageMask"} <= {n["class_type"] for n in workflow.values()}


def test_editor_value_to_image_and_mask():
    background = np.full((32, 32, 4), 255, np.uint8)
    layer = np.zeros((32, 32, 4), np.uint8)
    layer[:8, :8, 3] = 200
    image, mask = editor_image_and_mask({"background": background, "layers": [layer], "composite": background})
    assert image.size == (32, 32) and mask.mode == "L"
    assert mask.getbbox() == (0, 0, 8, 8)
    uploaded = Image.new("L", (32, 32), 255)
    assert editor_image_and_mask({"background": background, "layers": [layer]}, uploaded)[1] is uploaded
    assert editor_image_and_mask({"background": background, "layers": [np.zeros_like(layer)]})[1] is None


def test_inpaint_without_a_mask_is_refused(ctx):
    with pytest.raises(gr.Error, match="mask"):
        run_to_end(ctx, "inpaint", form(inpaint_image={"background": picture(), "layers": [], "composite": None}))


def test_png_info_of_a_generated_image_and_send_to_txt2img(ctx):
    last = run_to_end(ctx, "txt2img", form(seed=77, cfg_scale=6.5, sampler_name="dpmpp_2m", scheduler="karras"))
    path = last.results["images"][0]["path"]
    parameters, workflow_json, note = pnginfo.png_info(path)
    assert parameters == last.info and note == ""
    assert json.loads(workflow_json) == last.results["workflows"][0]
    fields = pnginfo.infotext_fields(parameters)
    assert fields == {"prompt": "a red circle", "negative_prompt": "blurry", "sampler_name": "DPM++ 2M",
                      "scheduler": "Karras", "steps": 2, "cfg_scale": 6.5, "seed": 77, "width": 64, "height": 64,
                      "clip_skip": 1, "randn_source": "NV", "eta_noise_seed_delta": 0,  # the tabs' default source
                      "subseed_strength": 0.0, "seed_resize_from_w": 0, "seed_resize_from_h": 0}  # no variation
    sent = pnginfo.infotext_fields(parameters, ctx.folders)
    assert sent == {**fields, "checkpoint": CKPT}  # found by its Model hash
    # what the infotext lacks (the variation seed here) leaves the form's value
    assert pnginfo.sent_values(parameters, ctx.folders) == [sent.get(name, gr.skip()) for name in pnginfo.SENT_FIELDS]
    assert pnginfo.checkpoint_note(parameters, ctx.folders) == ""
    assert pnginfo.png_info(None) == ("", "", "")
    # the PNG opens in the Workflows tab as the API workflow that made it
    assert load_upload(ctx, path) == last.results["workflows"][0]


def test_txt2img_with_hires_fix_vae_and_clip_skip(ctx):
    save_checkpoint(ctx.folders.models_dir / "vae" / "other.safetensors", *tiny_sd1(seed=3))
    last = run_to_end(ctx, "txt2img", form(
        enable_hr=True, hr_upscaler="Latent", hr_scale=1.5, hr_second_pass_steps=0, hr_resize_x=0, hr_resize_y=0,
        denoising_strength=0.7, hr_sampler_name="Use same sampler", hr_scheduler="Use same scheduler", hr_prompt="",
        hr_negative_prompt="", vae="other.safetensors", clip_skip=2, refiner_checkpoint="None",
        refiner_switch_at=0.8))
    (path, _), = last.gallery
    assert Image.open(path).size == (96, 96)
    info = parse_infotext(last.info)
    assert (info["Size-1"], info["Hires upscale"], info["Hires upscaler"]) == ("64", "1.5", "Latent")
    assert (info["Denoising strength"], info["VAE"], info["Clip skip"]) == ("0.7", "other.safetensors", "2")
    assert pnginfo.infotext_fields(last.info)["clip_skip"] == 2
    off = run_to_end(ctx, "txt2img", form(enable_hr=False, hr_upscaler="Latent", vae="Automatic", clip_skip=1))
    assert Image.open(off.gallery[0][0]).size == (64, 64) and "VAE" not in off.info


def test_workflow_form_for_txt2img_has_the_ksampler_widgets(registry, checkpoint):
    workflow = template("txt2img")
    fields = {(f.node_id, f.name): f for f in form_fields(workflow, object_info(registry))}
    steps, cfg, seed = fields["3", "steps"], fields["3", "cfg"], fields["3", "seed"]
    assert (steps.kind, steps.minimum, steps.maximum, steps.step) == ("INT", 1, 10000, 1)
    assert (cfg.kind, cfg.minimum, cfg.maximum, cfg.step) == ("FLOAT", 0.0, 100.0, 0.1)
    assert (seed.kind, seed.minimum, seed.maximum) == ("INT", 0, 2**64 - 1)
    assert fields["3", "denoise"].maximum == 1.0
    assert fields["3", "sampler_name"].kind == "COMBO" and "euler" in fields["3", "sampler_name"].choices
    import torch

    gpu_samplers = [c for c in fields["3", "sampler_name"].choices if c.endswith("_gpu")]
    assert bool(gpu_samplers) == torch.cuda.is_available()  # offered only with a GPU
    assert fields["3", "scheduler"].value == "normal"
    assert CKPT in fields["4", "ckpt_name"].choices
    assert fields["6", "text"].kind == "STRING" and fields["6", "text"].multiline
    assert fields["5", "width"].value == 128
    assert ("3", "model") not in fields and ("8", "samples") not in fields  # links are no widgets
    # the form's values go back into the workflow typed as declared
    specs = form_fields(workflow, object_info(registry))
    values = [{"steps": "3", "cfg": 4, "width": 64.0}.get(f.name) for f in specs]
    edited = apply_values(workflow, specs, values)
    assert edited["3"]["inputs"]["steps"] == 3 and edited["3"]["inputs"]["cfg"] == 4.0
    assert edited["5"]["inputs"]["width"] == 64 and isinstance(edited["5"]["inputs"]["width"], int)
    assert workflow["3"]["inputs"]["steps"] == 20  # the original is untouched


def test_save_and_load_a_workflow_by_name(make_ctx, tmp_path):
    ctx = make_ctx(start=False)
    workflow = template("img2img")
    source = save_workflow(ctx, "my img2img", workflow)
    saved = tmp_path / "data" / "user" / "default" / "workflows" / "my img2img.json"
    assert source == "saved:my img2img.json" and saved.is_file()
    assert "nodes" in json.loads(saved.read_text())  # the graph editor's format, so it opens there too
    assert ("Saved: my img2img", source) in workflow_sources(ctx)
    assert load_source(ctx, source) == (workflow, "my img2img")
    assert load_source(ctx, "template:txt2img")[0] == template("txt2img")
    save_workflow(ctx, "my img2img.json", template("txt2img"))  # same name: replaced
    assert load_source(ctx, source)[0] == template("txt2img")


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", ".hidden", "/etc/passwd", "C:\\evil", "x\x00y",
                                  "sub\\..\\..\\up"])
def test_saving_refuses_names_that_leave_the_folder(make_ctx, tmp_path, name):
    ctx = make_ctx(start=False)
    with pytest.raises(WorkflowError):
        save_workflow(ctx, name, template("txt2img"))
    with pytest.raises(gr.Error):
        workflows.save(ctx, name, template("txt2img"))
    assert not list(tmp_path.glob("**/*.json"))


def test_loading_refuses_paths_outside_the_saved_folder(make_ctx):
    ctx = make_ctx(start=False)
    for source in ("saved:../../jobs.db", "saved:/etc/passwd", "template:../README", "elsewhere:x"):
        with pytest.raises(WorkflowError):
            load_source(ctx, source)


def test_uploaded_editor_format_is_converted(make_ctx, registry, tmp_path):
    ctx = make_ctx(start=False)
    from inkwash.webui.graph_layout import api_to_ui

    upload = tmp_path / "editor.json"
    upload.write_text(json.dumps(api_to_ui(template("txt2img"), object_info(registry))))
    assert load_upload(ctx, upload) == template("txt2img")
    upload.write_text("[1, 2]")
    with pytest.raises(WorkflowError):
        load_upload(ctx, upload)


def test_workflows_tab_runs_a_workflow_and_shows_its_images(make_ctx, folders):
    ctx = make_ctx()
    picture().save(folders.input_dir / "copy-me.png")
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "copy-me.png"}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "copy"}}}
    opened = workflows.open_workflow(ctx, workflow, "copy")
    assert [(f["node_id"], f["name"]) for f in opened.fields] == [("1", "image"), ("2", "filename_prefix")]
    edited = workflows.edited(opened.workflow, opened.fields, ["copy-me.png", "copied"])
    last = list(workflows.run(ctx, edited))[-1]
    (path, name), = last.gallery
    assert name.startswith("copied") and Image.open(path).size == (64, 64)
    assert last.outputs["status"] == "success" and "Done" in last.progress


def test_queue_tab_lists_cancels_and_reopens_jobs(make_ctx, checkpoint):
    ctx = make_ctx(start=False)  # nothing runs: the jobs stay pending
    workflow = template("txt2img")
    workflow["4"]["inputs"]["ckpt_name"] = CKPT
    job = ctx.queue.submit(workflow, extra={"source": "tab"})
    rows = history.job_rows(ctx)
    assert rows[0][:5] == [job.id, job.number, "pending", "tab", workflow["6"]["inputs"]["text"]]
    table, recent, shown = history.refresh(ctx, None)
    assert table == rows and recent == [] and history.refresh(ctx, shown)[:2] == (gr.skip(), gr.skip())
    assert history.finished_workflow(ctx, job.id) == workflow
    assert history.cancel(ctx, job.id) == f"Cancelled {job.id}"
    assert ctx.queue.get(job.id).status == "cancelled"
    assert history.job_rows(ctx)[0][:3] == [job.id, job.number, "cancelled"]  # listed, as cancelled
    with pytest.raises(gr.Error):
        history.cancel(ctx, "no-such-job")


def test_depth2img_picks_the_controlnet_or_the_sd2_depth_workflow(folders, registry):
    checkpoints = folders.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    save_checkpoint(checkpoints / "depth.safetensors", *tiny_sd1("depth"))
    save_checkpoint(checkpoints / "base.safetensors", *tiny_sd1())
    assert is_depth_checkpoint(folders, "depth.safetensors")
    assert not is_depth_checkpoint(folders, "base.safetensors") and not is_depth_checkpoint(folders, "missing")

    from inkwash.webui.generation import GenerationParams, resolve
    params = resolve(GenerationParams(prompt="a cube", checkpoint="depth.safetensors", seed=3, batch_size=2,
                                      width=64, height=64, denoising_strength=0.6))
    controlled = depth2img_workflow(params, "init.png", controlnet="depth-cn.safetensors")
    assert controlled["14"]["class_type"] == "ControlNetApplyAdvanced"
    assert controlled["13"]["inputs"]["control_net_name"] == "depth-cn.safetensors"
    sd2 = depth2img_workflow(params, "init.png", sd2_depth=True)
    assert sd2["14"]["class_type"] == "ConditioningSetDepth" and "13" not in sd2
    assert sd2["3"]["inputs"]["positive"] == ["14", 0] and sd2["15"]["class_type"] == "PreviewImage"
    assert sd2["3_1"]["inputs"]["seed"] == 4 and sd2["3"]["inputs"]["denoise"] == 0.6
    validation = Executor(registry).validate(sd2)
    for node_id, entry in validation.node_errors.items():  # only LoadImage's missing file may fail here
        assert {e["type"] for e in entry["errors"]} <= {"value_not_in_list", "custom_validation_failed"}, entry


@pytest.fixture
def fake_depth_estimator(folders, monkeypatch):
    """A depth estimator that needs no weights: a left-to-right ramp."""
    from inkwash.nodes.runtime import annotators

    weights = folders.models_dir / "annotators" / "lllyasviel" / "Annotators" / annotators.MIDAS_FILE
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"fake")

    def loader(path):
        return lambda image, resolution, **options: np.tile(np.linspace(0, 255, resolution, dtype=np.uint8),
                                                           (resolution, 1))
    candidates, what, _ = annotators.DEPTH_ESTIMATORS["midas_dpt_hybrid"]
    monkeypatch.setitem(annotators.DEPTH_ESTIMATORS, "midas_dpt_hybrid", (candidates, what, loader))
    monkeypatch.setattr(annotators, "_loaded", {})
    monkeypatch.setattr(annotators, "DEPTH_PREFERENCE", ("midas_dpt_hybrid",))


def test_depth2img_shows_the_depth_map_it_computed(make_ctx, folders, fake_depth_estimator):
    from tiny_models import write_tiny_controlnet

    checkpoints = folders.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    save_checkpoint(checkpoints / "depth.safetensors", *tiny_sd1("depth"))
    save_checkpoint(checkpoints / CKPT, *tiny_sd1())
    write_tiny_controlnet(folders.models_dir / "controlnet", "depth-cn.safetensors")
    ctx = make_ctx()
    for checkpoint, conditioning in (("depth.safetensors", "ConditioningSetDepth"),
                                     (CKPT, "ControlNetApplyAdvanced")):
        last = run_to_end(ctx, "depth2img", form(checkpoint=checkpoint, init_image=picture(), denoising_strength=0.8,
                                                 controlnet="depth-cn.safetensors"))
        assert "Done" in last.progress, last.progress
        assert last.results["workflows"][0]["14"]["class_type"] == conditioning
        (path, _), = last.gallery
        (depth_path, _), = last.depth
        depth = np.asarray(Image.open(depth_path).convert("L")).astype(int)
        assert depth[:, -1].mean() > depth[:, 0].mean() + 100  # the ramp the estimator drew


def test_build_ui_constructs(ctx):
    blocks = build_ui(ctx)
    assert isinstance(blocks, gr.Blocks)
    galleries = [block for block in blocks.blocks.values() if isinstance(block, gr.Gallery)]
    assert {g.label for g in galleries} >= {"Results", "Depth map", "Images"}
    # whole pictures at their aspect ratio, in boxes as tall as they need (the browser test checks Results)
    assert all(g.object_fit == "contain" for g in galleries)
    assert all(g.height == "auto" for g in galleries if not g.label.startswith("Recent images"))
    assert str(ctx.folders.output_dir) in allowed_paths(ctx)
    assert send_image is not None and workflow_file(None, 0) is None


def test_workflow_form_widgets_are_editable_and_help_is_their_own(make_ctx):
    from inkwash.webui.tabs.workflow_files import Field

    ctx = make_ctx(start=False)
    kinds = [Field("1", "Node", "number", "INT", 3, 0, 10, 1), Field("1", "Node", "ratio", "FLOAT", 0.5),
             Field("1", "Node", "flag", "BOOLEAN", True, tooltip="a switch"), Field("1", "Node", "pick", "COMBO", "a",
                                                                                   choices=["a", "b"]),
             Field("1", "Node", "words", "STRING", "hello", multiline=True)]
    with gr.Blocks():
        widgets = [workflows._widget(ctx, field) for field in kinds]
    assert [type(w).__name__ for w in widgets] == ["Number", "Number", "Checkbox", "Dropdown", "Textbox"]
    assert all(w.interactive for w in widgets)
    assert [w.info for w in widgets] == ["", "", "a switch", "", ""]  # never None: no help left over


def test_uploads_that_are_not_pictures_are_refused_in_plain_words(tmp_path):
    from inkwash.webui.tabs.uploads import check_upload

    fake = tmp_path / "notes.png"
    fake.write_text("just some text")
    plain = tmp_path / "plain.png"
    picture().save(plain)
    raw = {"path": str(fake), "orig_name": "notes.png", "url": None}
    with pytest.warns(UserWarning, match="notes.png is not an image"):
        assert check_upload(raw) is None  # cleared
    editor = {"background": raw, "layers": [], "composite": raw}
    with pytest.warns(UserWarning, match="notes.png is not an image"):
        assert check_upload(editor) is None
    assert check_upload({"path": str(plain), "orig_name": "plain.png"}) == gr.skip()
    assert check_upload(None) == gr.skip()
    # PNG Info says what is wrong, naming the file as the user named it, and no server path
    assert pnginfo.png_info(raw) == ("", "", "notes.png is not an image (expected a PNG, JPEG or WebP picture).")
    assert pnginfo.png_info({"path": str(plain), "orig_name": "plain.png"}) == ("", "", pnginfo.NO_PARAMETERS)


def test_queue_tab_shows_prompts_thumbnails_and_a_jobs_images(ctx):
    last = run_to_end(ctx, "txt2img", form(batch_size=2, prompt="a blue star"))
    job = ctx.queue.get(last.results["jobs"][0])
    assert history.job_prompt(job.workflow) == "a blue star"
    (thumbnail, caption), = history.thumbnails(ctx, history.listed_jobs(ctx))
    assert thumbnail == last.results["images"][0]["path"] and caption == f"#{job.number} a blue star"
    images, line = history.show_job(ctx, job.id)
    assert [path for path, _ in images] == [image["path"] for image in last.results["images"]]
    assert line == f"Job #{job.number}: success - a blue star"
    sdxl = {"1": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "a cat", "text_l": "a cat"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry"}},
            "3": {"class_type": "KSampler", "inputs": {"positive": ["1", 0], "negative": ["2", 0]}}}
    assert history.job_prompt(sdxl) == "a cat" and history.job_prompt({}) == ""


def test_user_errors_are_logged_in_one_line_without_a_traceback(ctx, caplog, capsys):
    with caplog.at_level("WARNING"), pytest.raises(gr.Error) as refused:
        run_to_end(ctx, "txt2img", form(sampler_name="no such sampler"))
    assert refused.value.print_exception is False  # Gradio prints no traceback for it
    record, = [r for r in caplog.records if "no such sampler" in r.getMessage()]
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert record.getMessage().startswith("refused: sampler_name: unknown sampler 'no such sampler'")
    assert "Traceback" not in capsys.readouterr().err
