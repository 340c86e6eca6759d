"""Generation parameters -> workflows: names, limits, templates, input images, A1111's inpaint steps, and
the built workflows run on a tiny checkpoint with their infotext checked."""
import hashlib
import json

import numpy as np
import pytest
from inkwash.nodes.executor import Executor
from inkwash.nodes.formats.png_metadata import parse_infotext, read_png_metadata
from inkwash.webui import a1111_images
from inkwash.webui import generation as gen
from inkwash.webui import templates
from inkwash.webui.generation import BadRequest, GenerationParams
from PIL import Image

CKPT = "tiny-sd1.safetensors"


def small(**changes) -> GenerationParams:
    values = {"prompt": "a red circle", "negative_prompt": "blurry", "checkpoint": CKPT, "sampler_name": "Euler a",
              "steps": 2, "cfg_scale": 6.5, "seed": 1234, "width": 64, "height": 64}
    values.update(changes)
    return GenerationParams(**values)


def gradient(width=96, height=64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None].repeat(width, 1)
    return Image.fromarray(np.concatenate([x, y, np.full_like(x, 90)], axis=-1))


def box_mask(size, box) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


# -- names and limits -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler, scheduler, expected", [
    ("Euler a", None, ("euler_ancestral", "normal")),
    ("Euler a", "Automatic", ("euler_ancestral", "normal")),
    ("DPM++ 2M Karras", None, ("dpmpp_2m", "karras")),
    ("DPM++ 2M Karras", "Exponential", ("dpmpp_2m", "karras")),  # the combined name wins, as in A1111
    ("DPM++ 2M", "Karras", ("dpmpp_2m", "karras")),
    ("DPM++ 2M", None, ("dpmpp_2m", "karras")),  # A1111's Automatic for DPM++ 2M
    ("DPM++ 2M", "Exponential", ("dpmpp_2m", "exponential")),
    ("Euler", "karras", ("euler", "karras")),
    ("DDIM", "ddim", ("ddim", "ddim_uniform")),  # A1111's lowercase schedule name
    ("k_euler_a", "", ("euler_ancestral", "normal")),
    ("dpmpp_2m", None, ("dpmpp_2m", "karras")),
    ("euler", "simple", ("euler", "simple")),
])
def test_sampler_names_of_both_programs_map_to_comfyui(sampler, scheduler, expected):
    assert gen.sampler_and_scheduler(sampler, scheduler) == expected


@pytest.mark.parametrize("sampler, scheduler, field", [
    ("Euler z", None, "sampler_name"), ("", None, "sampler_name"), (3, None, "sampler_name"),
    ("Euler", "Sideways", "scheduler"), ("Euler", 5, "scheduler"),
])
def test_unknown_sampler_names_are_refused_naming_the_field(sampler, scheduler, field):
    with pytest.raises(BadRequest) as caught:
        gen.sampler_and_scheduler(sampler, scheduler)
    assert caught.value.field == field and field in str(caught.value)


def test_resolve_rounds_sizes_draws_a_seed_and_uses_comfyui_names():
    resolved = gen.resolve(small(width=515, height=70, seed=-1, sampler_name="DPM++ 2M Karras"))
    assert (resolved.width, resolved.height) == (512, 64)
    assert 0 <= resolved.seed < gen.RANDOM_SEEDS
    assert (resolved.sampler_name, resolved.scheduler) == ("dpmpp_2m", "karras")
    assert gen.resolve(resolved) == resolved  # idempotent


@pytest.mark.parametrize("changes, field", [
    ({"width": 63}, "width"), ({"height": 2056}, "height"), ({"width": "wide"}, "width"),
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"cfg_scale": float("nan")}, "cfg_scale"),
    ({"batch_size": 0}, "batch_size"), ({"n_iter": 1000}, "n_iter"), ({"seed": "x"}, "seed"),
    ({"denoising_strength": 1.5}, "denoising_strength"), ({"inpainting_fill": 4}, "inpainting_fill"),
    ({"resize_mode": 7}, "resize_mode"), ({"prompt": None}, "prompt"), ({"clip_skip": 0}, "clip_skip"),
    ({"width": 2048, "height": 2048, "batch_size": 2}, "width/height/batch_size"), ({"checkpoint": ""}, "checkpoint"),
    ({"mask": Image.new("L", (8, 8))}, "mask"), ({"init_image": "not an image"}, "init_image"),
])
def test_out_of_range_parameters_raise_bad_request_naming_the_field(changes, field):
    with pytest.raises(BadRequest) as caught:
        gen.resolve(small(**changes))
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_max_pixels_and_missing_checkpoint(folders, checkpoint):
    with pytest.raises(BadRequest, match="over the limit of 8192"):
        gen.resolve(small(batch_size=3), max_pixels=8192)
    assert gen.resolve(small(batch_size=2), max_pixels=8192).batch_size == 2
    with pytest.raises(BadRequest) as caught:
        gen.resolve(small(checkpoint="nope.safetensors"), folders)
    assert caught.value.field == "checkpoint" and "nope.safetensors" in str(caught.value)
    assert gen.resolve(small(), folders).checkpoint == CKPT


# -- workflows --------------------------------------------------------------------------------------------

def test_the_node_tables_name_the_templates_nodes():
    for name, nodes in templates.NODES.items():
        workflow = templates.template(name)
        named = {role: node_id for role, node_id in vars(nodes).items() if node_id is not None}
        for role, node_id in named.items():
            assert workflow[node_id]["class_type"] in templates.CLASS_TYPES[role], (name, role)
            for other in templates.NODES.values():  # a role has one id in every template that has it
                assert getattr(other, role) in (None, node_id), (name, role)
        added = (templates.CLIP_SKIP, templates.IMAGE_SCALE, templates.LATENT_UPSCALE, templates.LOAD_MASK)
        assert not set(added) & set(workflow), name  # what generation adds doesn't collide
        assert set(workflow) == set(named.values()), name  # every node has a name


def test_depth2img_marks_embeddings_and_honours_save_images(folders):
    (folders.models_dir / "embeddings").mkdir()
    (folders.models_dir / "embeddings" / "crimson.pt").write_bytes(b"")  # listed by name only
    (folders.models_dir / "checkpoints").mkdir()
    (folders.models_dir / "checkpoints" / CKPT).write_bytes(b"")
    params = small(prompt="a crimson cube", negative_prompt="(Crimson:1.2)", init_image=gradient(), batch_size=2,
                   save_images=False)
    plan = gen.build_depth2img(params, folders, controlnet="depth.safetensors")
    workflow = plan.workflows[0]
    nodes = templates.DEPTH2IMG
    assert workflow[nodes.positive]["inputs"]["text"] == "a embedding:crimson cube"
    assert workflow[nodes.negative]["inputs"]["text"] == "(embedding:crimson:1.2)"
    assert [workflow[n]["class_type"] for n in gen.output_nodes(workflow)] == ["PreviewImage", "PreviewImage"]
    saved = gen.build_depth2img(params.replace(save_images=True, filename_prefix="depth/test"), folders,
                                controlnet="depth.safetensors").workflows[0]
    assert [saved[n]["inputs"]["filename_prefix"] for n in gen.output_nodes(saved)] == ["depth/test"] * 2


def test_txt2img_workflow_patches_the_template():
    params = gen.resolve(small(batch_size=3, n_iter=2, clip_skip=2, scheduler="Karras"))
    before = json.dumps(gen.template("txt2img"), sort_keys=True)
    second = gen.txt2img_workflow(params, iteration=1)
    assert json.dumps(gen.template("txt2img"), sort_keys=True) == before  # the template is untouched
    sampler = second["3"]["inputs"]
    assert sampler["seed"] == 1234 + 3  # the second iteration starts one batch further
    assert (sampler["steps"], sampler["cfg"], sampler["denoise"]) == (2, 6.5, 1.0)
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("euler_ancestral", "karras")
    assert second["5"]["inputs"] == {"width": 64, "height": 64, "batch_size": 3}
    assert second["4"]["inputs"]["ckpt_name"] == CKPT
    assert second["6"]["inputs"]["text"] == "a red circle" and second["7"]["inputs"]["text"] == "blurry"
    assert second["20"] == {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}}
    assert second["6"]["inputs"]["clip"] == second["7"]["inputs"]["clip"] == ["20", 0]
    assert second["9"]["class_type"] == "SaveImage"
    preview = gen.txt2img_workflow(gen.resolve(small(save_images=False)))
    assert preview["9"] == {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    assert "20" not in preview


def test_img2img_workflow_resizes_in_the_graph_and_branches_a_batch():
    params = gen.resolve(small(batch_size=3, denoising_strength=0.5, resize_mode=1))
    workflow = gen.img2img_workflow(params, "img2img/init_x.png")
    assert workflow["10"]["inputs"]["image"] == "img2img/init_x.png"
    assert workflow["21"]["inputs"] == {"image": ["10", 0], "upscale_method": "lanczos", "width": 64, "height": 64,
                                        "crop": "center"}
    assert workflow["11"]["inputs"]["pixels"] == ["21", 0]
    assert gen.output_nodes(workflow) == ["9", "9_1", "9_2"]
    assert [workflow[n]["inputs"]["seed"] for n in ("3", "3_1", "3_2")] == [1234, 1235, 1236]
    assert workflow["3_2"]["inputs"]["denoise"] == 0.5 and workflow["9_2"]["inputs"]["images"] == ["8_2", 0]
    latent = gen.img2img_workflow(gen.resolve(small(resize_mode=3)), "a.png")
    assert latent["22"]["class_type"] == "LatentUpscale" and latent["3"]["inputs"]["latent_image"] == ["22", 0]
    assert "21" not in latent
    with pytest.raises(BadRequest, match="prepare"):
        gen.img2img_workflow(gen.resolve(small(resize_mode=2)), "a.png")
    with pytest.raises(BadRequest, match="prepare"):
        gen.img2img_workflow(gen.resolve(small()), "a.png", "m.png")


def test_inpaint_workflow_uses_a_separate_mask_and_latent_nothing_greys_it_out():
    params = gen.resolve(small(inpainting_fill=3))
    workflow = gen.img2img_workflow(params, "i.png", "m.png", resized=True)
    assert workflow["23"] == {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "red"}}
    assert workflow["12"]["inputs"]["mask"] == ["23", 0]
    assert workflow["11"]["class_type"] == "VAEEncodeForInpaint"
    assert "21" not in workflow  # already at the size
    original = gen.img2img_workflow(gen.resolve(small(inpainting_fill=1)), "i.png", "m.png", resized=True)
    assert original["11"]["class_type"] == "VAEEncode"


# -- input images and A1111's image steps ----------------------------------------------------------------

def test_store_input_image_writes_unique_names_inside_the_input_folder(folders):
    image = gradient()
    first = gen.store_input_image(folders, image, "a1111/init")
    second = gen.store_input_image(folders, image, "a1111/init")
    assert first != second and first.startswith("a1111/init_") and first.endswith(".png")
    assert Image.open(folders.input_dir / first).size == image.size
    hostile = gen.store_input_image(folders, image, "../../../etc/passwd")
    path = (folders.input_dir / hostile).resolve()
    assert folders.input_dir.resolve() in path.parents and path.is_file()
    assert not [p for p in folders.input_dir.rglob(".*")]  # no temporary files left behind
    cmyk = gen.store_input_image(folders, image.convert("CMYK"))
    assert Image.open(folders.input_dir / cmyk).mode == "RGBA"


def test_resize_modes_follow_a1111():
    wide = gradient(200, 100)
    assert a1111_images.resize_image(0, wide, 64, 64).size == (64, 64)
    cropped = np.asarray(a1111_images.resize_image(1, wide, 64, 64))
    assert cropped.shape == (64, 64, 3) and cropped[:, 0, 0].min() > 40  # left edge cut away
    filled = np.asarray(a1111_images.resize_image(2, wide, 64, 64))
    # fitted into 64x32 in the middle; the bands above and below repeat the edge rows, not black
    assert filled.shape == (64, 64, 3)
    assert np.abs(filled[0].astype(int) - filled[16].astype(int)).max() <= 16
    assert filled[:, :, 2].min() > 60


def test_mask_blur_and_only_masked_crop(folders):
    params = gen.resolve(small(width=64, height=64, mask_blur=4, inpaint_full_res=True,
                               inpaint_full_res_padding=8, inpainting_fill=0,
                               init_image=gradient(200, 100), mask=box_mask((200, 100), (120, 40, 140, 60))))
    prepared = gen.prepare_img2img(folders, params)
    overlay = prepared.overlay
    x, y, w, h = overlay.paste_box
    assert w == h and x <= 112 and x + w >= 148 and y <= 32 and y + h >= 68  # square around mask + padding
    assert overlay.overlay.size == (200, 100)  # pasted back into the whole image
    assert overlay.infotext == {"Mask blur": 4, "Inpaint area": "Only masked", "Masked area padding": 8,
                                "Masked content": "fill"}
    init = Image.open(folders.input_dir / prepared.init_name)
    mask = np.asarray(Image.open(folders.input_dir / prepared.mask_name))
    assert init.size == (64, 64) and mask.shape == (64, 64)
    assert 0 < mask[mask > 0].min() < 128  # blurred edge
    assert mask[32, 32] > 240 and mask[0, 0] == 0
    generated = Image.new("RGB", (64, 64), (255, 0, 255))
    final = np.asarray(overlay.apply(generated))
    assert final.shape == (100, 200, 3)
    assert (final[5, 5] == np.asarray(gradient(200, 100))[5, 5]).all()  # untouched far from the mask
    assert np.abs(final[50, 130].astype(int) - (255, 0, 255)).max() <= 8  # repainted inside it


def test_blank_mask_with_only_masked_is_plain_img2img(folders):
    params = gen.resolve(small(inpaint_full_res=True, init_image=gradient(), mask=Image.new("L", (96, 64))))
    prepared = gen.prepare_img2img(folders, params)
    assert prepared.mask_name is None and prepared.overlay is None and not prepared.resized


def test_fill_takes_colours_from_around_the_hole():
    image = Image.new("RGB", (64, 64), (0, 200, 0))
    image.paste((255, 0, 0), (24, 24, 40, 40))
    filled = np.asarray(a1111_images.fill_masked(image, box_mask((64, 64), (20, 20, 44, 44))))
    assert filled[32, 32, 1] > 150 and filled[32, 32, 0] < 60  # the red was replaced by the green around it


def test_add_infotext_params_goes_before_version():
    text = "a cat\nNegative prompt: dog\nSteps: 2, Sampler: Euler, Seed: 5, Size: 64x64, Version: inkwash"
    out = a1111_images.add_infotext_params(text, {"Mask blur": 4, "Inpaint area": "Only masked", "Skipped": None})
    assert out.endswith("Size: 64x64, Mask blur: 4, Inpaint area: Only masked, Version: inkwash")
    assert out.startswith("a cat\nNegative prompt: dog\n")


# -- running the workflows --------------------------------------------------------------------------------

def saved(folders, plan, iteration, result):
    assert result.status == "success", result.error
    return plan.finish(folders, iteration, result.outputs)


def test_txt2img_plan_runs_batches_and_iterations_with_a1111_infotext(registry, folders, checkpoint):
    plan = gen.build_txt2img(small(batch_size=2, n_iter=2, seed=-1), folders)
    executor = Executor(registry)
    paths = [p for i, wf in enumerate(plan.workflows) for p in saved(folders, plan, i, executor.execute(wf))]
    assert len(paths) == 4 and len(set(paths)) == 4
    seed = plan.params.seed
    assert plan.all_seeds == [seed, seed + 1, seed + 2, seed + 3]
    for path, expected_seed in zip(paths, plan.all_seeds):
        info = parse_infotext(read_png_metadata(path)["parameters"])
        assert info["Prompt"] == "a red circle" and info["Negative prompt"] == "blurry"
        assert (info["Steps"], info["Sampler"], info["CFG scale"]) == ("2", "Euler a", "6.5")
        assert info["Seed"] == str(expected_seed)
        assert (info["Size-1"], info["Size-2"]) == ("64", "64")
        assert info["Model"] == "tiny-sd1" and len(info["Model hash"]) == 10
        assert "Denoising strength" not in info
        assert Image.open(path).size == (64, 64)


def test_same_seed_gives_the_same_image_alone_or_in_a_batch(registry, folders, checkpoint):
    executor = Executor(registry)
    batch = gen.build_txt2img(small(batch_size=2, seed=77), folders)
    alone = gen.build_txt2img(small(seed=78), folders)
    batch_paths = saved(folders, batch, 0, executor.execute(batch.workflows[0]))
    alone_paths = saved(folders, alone, 0, executor.execute(alone.workflows[0]))
    difference = np.abs(np.asarray(Image.open(batch_paths[1]), dtype=int) - np.asarray(Image.open(alone_paths[0])))
    assert difference.max() <= 2  # batched kernels may round differently


def test_img2img_plan_runs_with_denoising_strength_in_infotext(registry, folders, checkpoint):
    plan = gen.build_img2img(small(init_image=gradient(), denoising_strength=0.5, batch_size=2, resize_mode=1,
                                   save_images=False), folders)
    paths = saved(folders, plan, 0, Executor(registry).execute(plan.workflows[0]))
    assert len(paths) == 2 and all(folders.temp_dir in p.parents for p in paths)  # not kept as outputs
    infos = [parse_infotext(read_png_metadata(p)["parameters"]) for p in paths]
    assert [i["Seed"] for i in infos] == ["1234", "1235"]
    assert all(i["Denoising strength"] == "0.5" and i["Size-1"] == "64" for i in infos)


def test_inpaint_only_masked_pastes_back_and_keeps_the_rest(registry, folders, checkpoint):
    original = gradient(128, 96)
    params = small(init_image=original, mask=box_mask((128, 96), (80, 30, 100, 50)), inpaint_full_res=True,
                   inpaint_full_res_padding=4, mask_blur=2, denoising_strength=0.9, inpainting_fill=2)
    plan = gen.build_img2img(params, folders)
    executor = Executor(registry)
    (path,) = saved(folders, plan, 0, executor.execute(plan.workflows[0]))
    result = np.asarray(Image.open(path).convert("RGB"))
    assert result.shape == (96, 128, 3)  # the whole picture, not the crop
    assert np.array_equal(result[:20, :60], np.asarray(original)[:20, :60])  # far from the mask: untouched
    assert not np.array_equal(result[38:42, 88:92], np.asarray(original)[38:42, 88:92])
    metadata = read_png_metadata(path)
    info = parse_infotext(metadata["parameters"])
    assert info["Inpaint area"] == "Only masked" and info["Mask blur"] == "2"
    assert info["Masked content"] == "latent noise" and info["Denoising strength"] == "0.9"
    assert info["Version"].startswith("inkwash")
    assert metadata["prompt"]["23"]["class_type"] == "LoadImageMask"
    # a cached re-run reports the same file; it is not post-processed twice
    again = executor.execute(plan.workflows[0])
    assert saved(folders, plan, 0, again) == [path]
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), result)


def test_inpaint_whole_picture_keeps_unmasked_pixels(registry, folders, checkpoint):
    original = gradient(64, 64)
    params = small(init_image=original, mask=box_mask((64, 64), (16, 16, 48, 48)), mask_blur=0,
                   inpainting_fill=1, denoising_strength=1.0)
    plan = gen.build_img2img(params, folders)
    (path,) = saved(folders, plan, 0, Executor(registry).execute(plan.workflows[0]))
    result = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(result[:8], np.asarray(original)[:8])
    assert "Denoising strength" not in parse_infotext(read_png_metadata(path)["parameters"])  # 1.0 is left out


def test_a_vae_file_decodes_instead_of_the_checkpoints_and_is_named_in_the_infotext(registry, folders, checkpoint):
    from tiny_models import tiny_sd1, write_tiny_checkpoint

    vae_file = write_tiny_checkpoint(folders.models_dir / "vae", "other.safetensors", tiny_sd1(seed=3))
    params = gen.resolve(small(vae="other.safetensors", clip_skip=2), folders)
    workflow = gen.txt2img_workflow(params)
    assert workflow["40"]["inputs"] == {"vae_name": "other.safetensors"} and workflow["8"]["inputs"]["vae"] == ["40", 0]
    img2img = gen.img2img_workflow(params, "a.png", resized=True)
    assert img2img["11"]["inputs"]["vae"] == img2img["8"]["inputs"]["vae"] == ["40", 0]

    executor = Executor(registry)
    own, other = (gen.build_txt2img(small(vae=vae, clip_skip=2), folders) for vae in ("Automatic", "other.safetensors"))
    (own_vae,) = saved(folders, own, 0, executor.execute(own.workflows[0]))
    (other_vae,) = saved(folders, other, 0, executor.execute(other.workflows[0]))
    assert not np.array_equal(np.asarray(Image.open(own_vae)), np.asarray(Image.open(other_vae)))
    info = parse_infotext(read_png_metadata(other_vae)["parameters"])
    assert (info["VAE"], info["VAE hash"], info["Clip skip"]) == ("other.safetensors", hashlib.sha256(vae_file.read_bytes()).hexdigest()[:10], "2")
    assert "VAE" not in parse_infotext(read_png_metadata(own_vae)["parameters"])
    with pytest.raises(BadRequest) as caught:
        gen.resolve(small(vae="missing.safetensors"), folders)
    assert caught.value.field == "vae" and "other.safetensors" in caught.value.message


def test_the_nodes_the_generation_layer_adds_have_ids_of_their_own():
    from inkwash.webui import generation_passes, templates

    added = {name: value for module in (templates, generation_passes) for name, value in vars(module).items()
             if name.isupper() and isinstance(value, str) and value.isdigit()}
    assert {"CLIP_SKIP", "HIRES_MODEL_LOADER", "REFINER_SAMPLER", "VARIATION_SEED"} <= set(added)
    clashes = {value for value in added.values() if list(added.values()).count(value) > 1}
    assert not clashes, {name: value for name, value in added.items() if value in clashes}
