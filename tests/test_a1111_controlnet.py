"""The ControlNet extension's API: units read as the extension reads them, wired into the workflows
generation.py builds and run with a tiny SD1 checkpoint and ControlNet; the /controlnet routes."""
import base64
import hashlib
import io
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from inkwash.nodes.executor import Executor
from inkwash.webui import a1111_controlnet as cn
from inkwash.webui import generation as gen
from inkwash.webui import generation_passes as passes
from inkwash.nodes.folders import REPO_ROOT
from inkwash.webui.bad_request import BadRequest
from inkwash.webui.generation import GenerationParams
from PIL import Image, ImageDraw
from tiny_models import write_tiny_controlnet

pytestmark = pytest.mark.usefixtures("one_thread")

CKPT = "tiny-sd1.safetensors"
CN_FILE = "control_tiny_canny.safetensors"


@pytest.fixture
def controlnet(folders):
    return write_tiny_controlnet(folders.models_dir / "controlnet", CN_FILE)


@pytest.fixture
def depth_estimator(folders):
    """Inkwash's bundled small depth estimator in this test's annotators folder."""
    (folders.models_dir / "annotators").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "models/annotators/inkwash-demo-depth.safetensors", folders.models_dir / "annotators")


def square(size=64, box=(16, 16, 48, 48)) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).rectangle(box, fill="white")
    return image


def png_b64(image: Image.Image, data_url: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{encoded}" if data_url else encoded


def extension_name(path) -> str:
    """How the extension lists a model: its stem and A1111's old hash (sha256 of 64 KiB at 1 MiB)."""
    with open(path, "rb") as file:
        file.seek(1 << 20)
        digest = hashlib.sha256(file.read(1 << 16)).hexdigest()[:8]
    return f"{path.stem} [{digest}]"


def unit(**changes) -> dict:
    values = {"enabled": True, "module": "canny", "model": "control_tiny_canny", "weight": 1.0,
              "image": png_b64(square()), "resize_mode": "Crop and Resize", "guidance_start": 0.0,
              "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False}
    values.update(changes)
    return values


def small(**changes) -> GenerationParams:
    values = {"prompt": "a red circle", "negative_prompt": "blurry", "checkpoint": CKPT, "sampler_name": "euler",
              "steps": 3, "cfg_scale": 6.0, "seed": 7, "width": 64, "height": 64}
    values.update(changes)
    return GenerationParams(**values)


def field_of(call) -> str:
    with pytest.raises(BadRequest) as info:
        call()
    return info.value.field


# -- reading units ---------------------------------------------------------------------------------------

def test_units_read_with_the_extension_defaults_aliases_and_name_matching(folders, controlnet):
    listed = extension_name(controlnet)
    minimal = {"module": "depth", "model": listed, "input_image": "data:image/png;base64," + png_b64(square())}
    (parsed,) = cn.parse_units([minimal], folders)  # no "enabled": the extension's API unit runs
    assert (parsed.module, parsed.model, parsed.weight, parsed.resize_mode) == ("depth", CN_FILE, 1.0, 1)
    assert (parsed.processor_res, parsed.guidance_start, parsed.guidance_end) == (512, 0.0, 1.0)
    assert parsed.image.size == (64, 64)
    for name in (listed, "control_tiny_canny", "CONTROL_TINY_CANNY", CN_FILE, "control_tiny_canny [00000000]",
                 "tiny_canny"):
        assert cn.find_model(name, folders) == CN_FILE, name
    assert cn.find_model("other", folders) is None
    for module in ("canny", "depth_midas", "depth", "none", "None"):
        assert cn.parse_units([unit(module=module)], folders)[0].module == cn.module_key(module)

    legacy = unit(guidance=0.5, lowvram=True, threshold_a=50, threshold_b=-1, control_mode=0, resize_mode=0)
    del legacy["guidance_end"]
    args = [unit(enabled=False, module="no such module"), unit(model="None"), legacy]
    (only,) = cn.parse_units(args, folders)
    assert (only.index, only.guidance_end, only.threshold_a, only.threshold_b, only.resize_mode) == (2, 0.5, 50, 200, 0)
    assert cn.parse_units([unit(resize_mode="Envelope (Outer Fit)")], folders)[0].resize_mode == 2
    out_of_range = cn.parse_units([unit(threshold_a=999)], folders)[0]
    assert out_of_range.threshold_a == 100 and "threshold_a" in out_of_range.warnings[0]


def test_units_inkwash_cannot_run_are_refused_naming_the_unit_and_field(folders, checkpoint, controlnet):
    where = "alwayson_scripts.controlnet.args[1]"
    ok = unit()
    cases = {
        "module": unit(module="openpose"), "model": unit(model="control_v11p_sd15_openpose [cab727d4]"),
        "control_mode": unit(control_mode="My prompt is more important"),
        "weight": unit(weight=-1), "guidance_start": unit(guidance_start=0.8, guidance_end=0.2),
        "image": unit(image="not base64!"), "resize_mode": unit(resize_mode="Stretch"),
    }
    for name, bad in cases.items():
        assert field_of(lambda: cn.parse_units([ok, bad], folders)) == f"{where}.{name}"
    assert field_of(lambda: cn.parse_units([ok, unit(control_mode=2)], folders)) == f"{where}.control_mode"
    assert field_of(lambda: cn.parse_units([ok, unit(image="x", input_image="y")], folders)) == f"{where}.input_image"
    assert field_of(lambda: cn.parse_units({"module": "canny"}, folders)) == "alwayson_scripts.controlnet.args"
    # txt2img has no init image to fall back on
    plan = gen.build_txt2img(small(), folders)
    assert field_of(lambda: cn.apply_to_plan(plan, [unit(image=None)], folders)) == \
        "alwayson_scripts.controlnet.args[0].image"
    assert not (folders.input_dir / "controlnet").exists()  # nothing stored for a refused request


def test_controlnet_args_are_found_in_alwayson_scripts_in_any_case():
    units, others = cn.controlnet_args({"ControlNet": {"args": [{"module": "canny"}]}, "ADetailer": {"args": []}})
    assert units == [{"module": "canny"}] and others == {"ADetailer": {"args": []}}
    assert cn.controlnet_args(None) == ([], {})


# -- wiring ----------------------------------------------------------------------------------------------

def test_units_sit_between_the_prompts_and_every_sampler_of_hires_and_batches(folders, checkpoint, controlnet):
    params = small(enable_hr=True, hr_scale=2.0, denoising_strength=0.5, n_iter=2)
    plan = gen.build_txt2img(params, folders)
    wide = Image.new("RGB", (128, 64), "black")
    ImageDraw.Draw(wide).rectangle((0, 0, 20, 63), fill="white")  # outside the centre crop
    ImageDraw.Draw(wide).rectangle((60, 20, 67, 43), fill="white")
    warnings = cn.apply_to_plan(plan, [unit(image=png_b64(wide), threshold_a=60, threshold_b=180),
                                       unit(module="depth", weight=0.5, hr_option="Low res only", resize_mode=0)],
                                folders)
    assert warnings == []
    for workflow in plan.workflows:
        first, hires = workflow["3"]["inputs"], workflow[passes.HIRES_SAMPLER]["inputs"]
        assert first["positive"] == ["cn1_apply", 0] and first["negative"] == ["cn1_apply", 1]
        assert workflow["cn1_apply"]["inputs"]["positive"] == ["cn0_apply", 0]
        assert workflow["cn0_apply"]["inputs"]["positive"] == ["6", 0]
        assert workflow["cn0_apply"]["inputs"]["negative"] == ["7", 0]
        # the hires pass gets unit 0 made again at its size (unit 1 is for the first pass only)
        assert hires["positive"] == ["cn0_apply_hires", 0] and hires["negative"] == ["cn0_apply_hires", 1]
        assert workflow["cn0_apply_hires"]["inputs"]["image"] == ["cn0_pre_hires", 0]
        assert workflow["cn0_pre_hires"]["inputs"]["image"] == ["cn0_image_hires", 0]
        assert "cn1_image_hires" not in workflow
        canny = workflow["cn0_pre"]
        assert canny["class_type"] == "Canny" and canny["inputs"]["image"] == ["cn0_image", 0]
        assert canny["inputs"]["low_threshold"] == pytest.approx(60 / 255)
        assert canny["inputs"]["high_threshold"] == pytest.approx(180 / 255)
        assert workflow["cn1_pre"]["class_type"] == "MiDaS-DepthMapPreprocessor"
        assert workflow["cn1_pre"]["inputs"]["resolution"] == 512
        apply = workflow["cn1_apply"]["inputs"]
        assert apply["control_net"] == ["cn1_loader", 0] and apply["strength"] == 0.5
        assert workflow["cn1_loader"]["inputs"]["control_net_name"] == CN_FILE
    stored = Image.open(folders.input_dir / plan.workflows[0]["cn0_image"]["inputs"]["image"])
    assert stored.size == (64, 64)  # crop and resize to the generation size: the centre, not squeezed
    box = np.argwhere(np.asarray(stored.convert("L")) > 128)
    assert (box[:, 1].min(), box[:, 1].max(), box[:, 0].min(), box[:, 0].max()) == (28, 35, 20, 43)
    stored = Image.open(folders.input_dir / plan.workflows[0]["cn0_image_hires"]["inputs"]["image"])
    assert stored.size == (128, 128)
    box = np.argwhere(np.asarray(stored.convert("L")) > 128)
    assert (box[:, 1].min(), box[:, 1].max(), box[:, 0].min(), box[:, 0].max()) == (56, 71, 40, 87)
    only_hires = gen.build_txt2img(params, folders)
    cn.apply_to_plan(only_hires, [unit(hr_option="High res only")], folders)
    workflow = only_hires.workflows[0]
    assert workflow["3"]["inputs"]["positive"] == ["6", 0] and "cn0_image" not in workflow
    assert workflow[passes.HIRES_SAMPLER]["inputs"]["positive"] == ["cn0_apply_hires", 0]

    plan = gen.build_img2img(small(batch_size=2, init_image=square()), folders)
    cn.apply_to_plan(plan, [unit(image=None, module="none", pixel_perfect=True)], folders)
    workflow = plan.workflows[0]
    assert workflow["3"]["inputs"]["positive"] == workflow["3_1"]["inputs"]["positive"] == ["cn0_apply", 0]
    assert "cn0_apply_1" not in workflow and "cn0_pre" not in workflow
    assert workflow["cn0_apply"]["inputs"]["image"] == ["cn0_image", 0]
    used = Image.open(folders.input_dir / workflow["cn0_image"]["inputs"]["image"]).convert("RGB")
    assert np.array_equal(np.asarray(used), np.asarray(square()))  # the init image stands in
    assert workflow["cn0_image"]["inputs"]["image"] in plan.inputs.stored


def test_only_masked_inpainting_crops_the_control_image_as_the_init_image(folders, checkpoint, controlnet):
    init = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    mask = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(mask).rectangle((10, 10, 30, 30), fill=255)
    plan = gen.build_img2img(small(init_image=init, mask=mask, inpaint_full_res=True, inpaint_full_res_padding=4,
                                   mask_blur=0), folders)
    assert plan.inputs.overlay.paste_box is not None
    cn.apply_to_plan(plan, [unit(image=None, module="none"), unit(image=png_b64(init), module="none")], folders)
    crop = np.asarray(Image.open(folders.input_dir / plan.inputs.init_name).convert("RGB"))
    for index in (0, 1):
        name = plan.workflows[0][f"cn{index}_image"]["inputs"]["image"]
        assert np.array_equal(np.asarray(Image.open(folders.input_dir / name).convert("RGB")), crop)


# -- running ---------------------------------------------------------------------------------------------

def generate(registry, folders, units, **changes) -> np.ndarray:
    plan = gen.build_txt2img(small(**changes), folders)
    cn.apply_to_plan(plan, units, folders)
    result = Executor(registry).execute(plan.workflows[0])
    assert result.status == "success", result.error
    entry = result.outputs["9"]["images"][0]
    return np.asarray(Image.open(folders.output_dir / entry["subfolder"] / entry["filename"]).convert("RGB"), dtype=int)


def test_controlnet_changes_the_image_and_weight_guidance_and_enabled_act(registry, folders, checkpoint, controlnet):
    plain = generate(registry, folders, [])
    controlled = generate(registry, folders, [unit()])
    assert np.abs(controlled - plain).mean() > 1
    assert np.array_equal(generate(registry, folders, [unit(weight=0)]), plain)
    assert np.array_equal(generate(registry, folders, [unit(enabled=False)]), plain)
    assert np.array_equal(generate(registry, folders, [unit(guidance_start=0.0, guidance_end=0.0)]), plain)
    cut = generate(registry, folders, [unit(guidance_end=0.5)])  # active for the first of 3 steps only
    assert not np.array_equal(cut, plain) and not np.array_equal(cut, controlled)
    none_module = generate(registry, folders, [unit(module="none")])  # the square itself, not its edges
    assert not np.array_equal(none_module, controlled)


def test_depth_units_run_through_the_depth_preprocessor(registry, folders, checkpoint, controlnet, depth_estimator):
    plain = generate(registry, folders, [])
    depth = generate(registry, folders, [unit(module="depth_midas", pixel_perfect=True)])
    assert np.abs(depth - plain).mean() > 1
    assert not np.array_equal(depth, generate(registry, folders, [unit(module="none")]))


def test_controlnet_reaches_the_hires_pass(registry, folders, checkpoint, controlnet):
    hires = {"enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5, "steps": 2}
    low_only = generate(registry, folders, [unit(hr_option="Low res only")], **hires)
    both = generate(registry, folders, [unit()], **hires)
    assert both.shape == (96, 96, 3) and not np.array_equal(both, low_only)


# -- routes ----------------------------------------------------------------------------------------------

@pytest.fixture
def client(folders):
    app = FastAPI()
    app.include_router(cn.router(SimpleNamespace(folders=folders, max_upload_bytes=2 * 2**20)))
    with TestClient(app) as test_client:
        yield test_client


def test_model_module_version_and_control_type_lists(client, folders, controlnet):
    assert client.get("/controlnet/version").json() == {"version": 2}
    assert client.get("/controlnet/model_list").json() == {"model_list": [extension_name(controlnet)]}
    modules = client.get("/controlnet/module_list").json()
    assert modules["module_list"] == ["none", "canny", "depth"]
    assert [s["value"] for s in modules["module_detail"]["canny"]["sliders"]] == [512, 100, 200]
    assert client.get("/controlnet/module_list?alias_names=true").json()["module_list"][2] == "depth_midas"
    types = client.get("/controlnet/control_types").json()["control_types"]
    assert types["Canny"]["default_option"] == "canny" and types["Canny"]["default_model"] == extension_name(controlnet)
    assert types["Depth"]["module_list"] == ["none", "depth_midas"] and types["Depth"]["default_model"] == "None"


def test_detect_runs_the_preprocessor_and_refuses_what_it_cannot(client):
    body = {"controlnet_module": "canny", "controlnet_input_images": [png_b64(square(), data_url=True)],
            "controlnet_processor_res": 128, "controlnet_threshold_a": 100, "controlnet_threshold_b": 200}
    response = client.post("/controlnet/detect", json=body)
    assert response.status_code == 200, response.text
    (encoded,) = response.json()["images"]
    edges = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("L"))
    assert edges.shape == (128, 128)  # the shorter side at processor_res
    assert edges[64, 30:34].max() == 255 and edges[64, 50:80].max() == 0 and edges[5:20, 5:20].max() == 0

    none = client.post("/controlnet/detect", json={**body, "controlnet_module": "none"}).json()["images"][0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(none))).convert("RGB")),
                          np.asarray(square()))
    assert client.post("/controlnet/detect", json={**body, "controlnet_module": "depth"}).json()["field"] == \
        "controlnet_module"  # no depth estimator in this test's annotators folder: said, not a server error
    for bad, field in (({"controlnet_module": "openpose"}, "controlnet_module"),
                       ({"controlnet_input_images": []}, "controlnet_input_images"),
                       ({"controlnet_input_images": ["%%%"]}, "controlnet_input_images[0]")):
        response = client.post("/controlnet/detect", json={**body, **bad})
        assert response.status_code == 422 and response.json()["field"] == field


def test_detect_depth_gives_a_depth_map_at_the_processor_resolution(client, depth_estimator):
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1)))
    response = client.post("/controlnet/detect", json={"controlnet_module": "depth_midas",
                                                       "controlnet_input_images": [png_b64(gradient)],
                                                       "controlnet_processor_res": 128})
    assert response.status_code == 200, response.text
    depth = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))).convert("RGB"))
    assert depth.shape == (128, 192, 3) and depth.std() > 0
