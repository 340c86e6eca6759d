"""The X/Y/Z plot (webui/xyz_plot.py, xyz_axes.py, xyz_grid_image.py): A1111's value syntax, its axis
indices and script_args through /sdapi/v1, the grid and its cells (equal to single generations), one
workflow whose shared nodes run once, the tabs' Script dropdown and the exported grid workflow; on a
tiny SD1-shaped checkpoint at 64x64 with 1-2 steps."""
import base64
import io
import json

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from inkwash.nodes.executor import Executor
from inkwash.nodes.formats.png_metadata import parse_infotext, read_png_metadata
from inkwash.webui.a1111_api import router
from inkwash.webui.bad_request import BadRequest
from inkwash.webui.context import ServerContext
from inkwash.webui.events import EventHub
from inkwash.webui.jobs import JobQueue
from inkwash.webui.parameters import GenerationParams
from inkwash.webui.tabs.generate import generate
from inkwash.webui.tabs.xyz_plot import TITLE, export_workflow, fill_values
from inkwash.webui.xyz_axes import AXES, axes_for, find_axis, parse_values
from inkwash.webui.xyz_plot import SCRIPT_ARGS, XyzSettings, build_plot, merge_workflows

CKPT = "tiny-sd1.safetensors"
SMALL = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 1, "width": 64, "height": 64,
         "sampler_name": "Euler", "cfg_scale": 6, "seed": 5}
TXT2IMG = {axis.label: index for index, axis in enumerate(axes_for("txt2img"))}
IMG2IMG = {axis.label: index for index, axis in enumerate(axes_for("img2img"))}


def axis(label, mode="txt2img"):
    return find_axis(mode, label, "X")


# -- values -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, text, expected", [
    ("Steps", "1-5", [1, 2, 3, 4, 5]),
    ("Steps", "1-5 (+2)", [1, 3, 5]),
    ("Seed", "10-1 (-3)", [10, 7, 4, 1]),
    ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),
    ("Steps", "3, 1-2, 8", [3, 1, 2, 8]),
    ("Seed", "-5--3", [-5, -4, -3]),
    ("CFG Scale", "0.5-1.5 (+0.25)", [0.5, 0.75, 1.0, 1.25, 1.5]),
    ("CFG Scale", "1-2 [3]", [1.0, 1.5, 2.0]),
    ("CFG Scale", "7, 7.5", [7.0, 7.5]),
    ("Denoising", "1-0 (-0.5)", [1.0, 0.5, 0.0]),
    ("Prompt S/R", 'circle, "square, blue", dot', ["circle", "square, blue", "dot"]),
    ("Sampler", "Euler a, DPM++ 2M", ["Euler a", "DPM++ 2M"]),
    ("LoRA weight", "0-1 [3]", [(None, 0.0), (None, 0.5), (None, 1.0)]),
    ("LoRA weight", "style:0.5, style:1-2 (+1)", [("style", 0.5), ("style", 1.0), ("style", 2.0)]),
])
def test_a1111_value_syntax(label, text, expected):
    assert parse_values(axis(label), text) == expected


@pytest.mark.parametrize("label, text, words", [
    ("Steps", "5-1", "has no values"),
    ("Steps", "1-5 (+0)", "step of 0"),
    ("Steps", "1-5 (2)", "not an integer"),  # A1111's step needs its sign
    ("Steps", "1-10 [0]", "has no values"),
    ("Steps", "two", "'two' is not an integer"),
    ("Steps", "1.5", "not an integer"),
    ("CFG Scale", "high", "not a number"),
    ("CFG Scale", "2-1 (+0.5)", "has no values"),
    ("Seed", " , ", "no values"),
])
def test_bad_values_are_refused_naming_the_axis(label, text, words):
    with pytest.raises(BadRequest) as err:
        parse_values(axis(label), text, "Y")
    assert err.value.field == "Y values" and words in err.value.message


def test_axis_indices_follow_a1111s_list_per_tab():
    assert [TXT2IMG[label] for label in ("Nothing", "Seed", "Steps", "CFG Scale", "Prompt S/R", "Sampler",
                                          "Checkpoint name")] == [0, 1, 4, 6, 7, 9, 11]
    assert [IMG2IMG[label] for label in ("Image CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name")] == \
        [6, 7, 9, 10]
    assert TXT2IMG["Size"] == len(axes_for("txt2img")) - 2 and AXES[-1].label == "LoRA weight"
    assert find_axis("txt2img", 4, "X").label == "Steps" and find_axis("txt2img", "clip SKIP", "X").label == "Clip skip"
    assert find_axis("txt2img", 2, "X").label == "Var. seed"
    with pytest.raises(BadRequest, match="'Sigma Churn' axis is not available"):
        find_axis("txt2img", "Sigma Churn", "X")
    with pytest.raises(BadRequest, match="out of range"):
        find_axis("img2img", 99, "Z")


# -- the API --------------------------------------------------------------------------------------------

@pytest.fixture
def ctx(folders, checkpoint, registry, tmp_path, one_thread):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    hub = EventHub()
    queue = JobQueue(data_dir / "jobs.db", registry, hub)
    queue.start()
    yield ServerContext(queue=queue, hub=hub, folders=folders, registry=registry, data_dir=data_dir,
                        max_upload_bytes=2 * 2**20, max_pixels=512 * 512)
    queue.close()


@pytest.fixture
def client(ctx):
    app = FastAPI()
    app.include_router(router(ctx))
    with TestClient(app) as test_client:
        yield test_client


def script_args(mode="txt2img", **values):
    settings = {name: getattr(XyzSettings(), name) for name in SCRIPT_ARGS}
    settings.update(values)
    return [settings[name] for name in SCRIPT_ARGS]


def decode(encoded):
    raw = base64.b64decode(encoded)
    return Image.open(io.BytesIO(raw)).convert("RGB"), raw


def pixels(image):
    return np.asarray(image.convert("RGB"))


def test_api_plot_returns_the_grid_and_every_cell_equal_to_single_generations(client):
    args = script_args(x_type=TXT2IMG["Seed"], x_values="11-12", y_type=TXT2IMG["Steps"], y_values="1, 2",
                       draw_legend=False, include_lone_images=True)
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "X/Y/Z Plot", "script_args": args})
    assert response.status_code == 200, response.text
    body = response.json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 1 + 4 and len(info["infotexts"]) == 5
    grid, _ = decode(body["images"][0])
    cells = [decode(encoded)[0] for encoded in body["images"][1:]]
    assert grid.size == (2 * 64, 2 * 64)  # no legend: the cells side by side, X across, Y down
    assert info["all_seeds"] == [11, 11, 12, 11, 12] and info["index_of_first_image"] == 1
    for index, cell in enumerate(cells):
        column, row = index % 2, index // 2
        assert np.array_equal(pixels(grid.crop((column * 64, row * 64, column * 64 + 64, row * 64 + 64))),
                              pixels(cell))
        parsed = parse_infotext(info["infotexts"][index + 1])
        assert (parsed["Seed"], parsed["Steps"]) == (str(11 + column), str(1 + row))
    grid_info = parse_infotext(info["infotexts"][0])
    assert grid_info["Script"] == "X/Y/Z plot" and grid_info["X Type"] == "Seed" and grid_info["X Values"] == "11-12"
    assert grid_info["Y Type"] == "Steps" and grid_info["Fixed X Values"] == "11, 12"
    # each cell is the image a single request with its parameters makes
    for seed, steps, cell in ((12, 1, cells[1]), (11, 2, cells[2])):
        single = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": seed, "steps": steps})
        assert np.array_equal(pixels(decode(single.json()["images"][0])[0]), pixels(cell))


def test_api_grid_with_legend_and_z_axis_gives_a_grid_per_z_value(client):
    args = script_args(x_type=TXT2IMG["CFG Scale"], x_values="1-5 [2]", y_type=TXT2IMG["Nothing"],
                       z_type=TXT2IMG["Prompt S/R"], z_values="red, blue", include_sub_grids=True)
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "x/y/z plot", "script_args": args})
    assert response.status_code == 200, response.text
    body = response.json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 3  # the grid of grids, then one grid per Z value; no lone images
    main, subs = decode(body["images"][0])[0], [decode(e)[0] for e in body["images"][1:]]
    assert info["all_prompts"] == ["a red circle", "a red circle", "a blue circle"]
    for sub in subs:  # two 64 px cells under a band of column labels
        assert sub.width == 2 * 64 and sub.height > 64
        bottom = pixels(sub)[-64:]
        assert not np.all(bottom == 255)
        band = pixels(sub)[: sub.height - 64]
        assert (band < 128).any() and (band == 255).mean() > 0.5  # dark label text on white
    assert main.width == 2 * subs[0].width and main.height > subs[0].height
    assert parse_infotext(info["infotexts"][0])["Z Values"] == "red, blue"
    assert "Z Type" not in parse_infotext(info["infotexts"][1])


def test_api_refuses_what_it_cannot_plot_naming_it(client):
    cases = [
        ({"script_name": "prompt matrix"}, "script_name", "not available"),
        ({"script_name": "x/y/z plot", "script_args": script_args(x_type=TXT2IMG["Eta"], x_values="0, 1")},
         "X type", "'Eta' axis is not available"),
        ({"script_name": "x/y/z plot", "script_args": script_args(x_values="1-3", y_type=TXT2IMG["Steps"],
                                                                    y_values="9-1")}, "Y values", "no values"),
        ({"script_name": "x/y/z plot", "script_args": script_args(x_type=TXT2IMG["Prompt S/R"],
                                                                    x_values="dog, cat")}, "X values", "'dog'"),
        ({"script_name": "x/y/z plot", "script_args": script_args(x_type=TXT2IMG["Checkpoint name"],
                                                                    x_values="missing")}, "X values", "not found"),
    ]
    for extra, field, words in cases:
        response = client.post("/sdapi/v1/txt2img", json={**SMALL, **extra})
        assert response.status_code == 422, (extra, response.text)
        assert response.json()["field"] == field and words in response.json()["errors"], response.text
    scripts = client.get("/sdapi/v1/scripts").json()
    assert scripts == {"txt2img": ["x/y/z plot"], "img2img": ["x/y/z plot"]}
    info = client.get("/sdapi/v1/script-info").json()
    assert [len(entry["args"]) for entry in info] == [len(SCRIPT_ARGS)] * 2
    assert info[0]["args"][0]["choices"][TXT2IMG["Steps"]] == "Steps"


def test_api_choice_axes_take_the_dropdown_values_unless_csv_mode(client):
    args = script_args(x_type=TXT2IMG["Sampler"], x_values="Heun", x_values_dropdown=["Euler", "Euler a"],
                       include_lone_images=True)
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "x/y/z plot", "script_args": args})
    assert response.status_code == 200, response.text
    infotexts = json.loads(response.json()["info"])["infotexts"]
    assert [parse_infotext(text)["Sampler"] for text in infotexts[1:]] == ["Euler", "Euler a"]
    args[SCRIPT_ARGS.index("csv_mode")] = True
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "script_name": "x/y/z plot", "script_args": args})
    assert [parse_infotext(t)["Sampler"] for t in json.loads(response.json()["info"])["infotexts"][1:]] == ["Heun"]


def test_an_inpainting_plot_keeps_the_unmasked_pixels_of_every_cell(client):
    original = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 44, 44))
    encoded = []
    for image in (original, mask):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    response = client.post("/sdapi/v1/img2img", json={
        **SMALL, "init_images": [encoded[0]], "mask": encoded[1], "mask_blur": 0, "inpainting_fill": 1,
        "inpaint_full_res": False, "denoising_strength": 1.0, "script_name": "x/y/z plot",
        "script_args": script_args("img2img", x_type=IMG2IMG["Seed"], x_values="1, 2", include_lone_images=True)})
    assert response.status_code == 200, response.text
    cells = [pixels(decode(e)[0]) for e in response.json()["images"][1:]]
    assert len(cells) == 2 and not np.array_equal(cells[0], cells[1])
    for cell in cells:
        assert np.array_equal(cell[:16], pixels(original)[:16])  # outside the mask: the original
        assert not np.array_equal(cell[24:40, 24:40], pixels(original)[24:40, 24:40])


def test_img2img_plot_over_denoising(client):
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    buffer = io.BytesIO()
    init.save(buffer, format="PNG")
    args = script_args("img2img", x_type=IMG2IMG["Denoising"], x_values="0.3, 0.9", include_lone_images=True)
    response = client.post("/sdapi/v1/img2img", json={
        **SMALL, "init_images": [base64.b64encode(buffer.getvalue()).decode()], "script_name": "x/y/z plot",
        "script_args": args})
    assert response.status_code == 200, response.text
    infotexts = json.loads(response.json()["info"])["infotexts"]
    assert [parse_infotext(text)["Denoising strength"] for text in infotexts[1:]] == ["0.3", "0.9"]


# -- one workflow, shared nodes -------------------------------------------------------------------------

def test_a_seed_axis_loads_and_encodes_once(folders, checkpoint, registry, one_thread):
    params = GenerationParams(checkpoint=CKPT, prompt="a red circle", steps=1, width=64, height=64, seed=1,
                              save_images=False)
    plan = build_plot("txt2img", params, XyzSettings(x_type="Seed", x_values="1-3"), folders)
    workflow = plan.workflows[0]
    classes = [node["class_type"] for node in workflow.values()]
    assert classes.count("CheckpointLoaderSimple") == 1 and classes.count("KSampler") == 3
    ran = []
    result = Executor(registry).execute(workflow, on_event=lambda name, data: ran.append(data["node"])
                                        if name == "executing" and data.get("node") else None)
    assert result.status == "success"
    ran_classes = [workflow[node]["class_type"] for node in ran]
    assert ran_classes.count("CheckpointLoaderSimple") == 1 and ran_classes.count("CLIPTextEncode") == 2
    assert ran_classes.count("KSampler") == 3 and ran_classes.count("EmptyLatentImage") == 1
    grid = Image.open(plan.finish(folders, 0, result.outputs)[0])
    assert grid.width == 3 * 64 and grid.height > 64  # no Y axis: no row labels, a band of column labels
    assert "Script: X/Y/Z plot" in read_png_metadata(grid.filename)["parameters"]
    # an interrupted run: the missing cell is blank in the grid, as A1111 leaves it
    partial = {k: v for k, v in result.outputs.items() if k != plan.cell_at(2, 0, 0).saver}
    plan.settings.draw_legend = False
    cut = pixels(Image.open(plan.finish(folders, 0, partial)[0]))
    assert cut.shape == (64, 3 * 64, 3) and (cut[:, 128:] == 0).all() and cut[:, :128].any()


def test_the_executor_runs_identical_nodes_of_different_branches_once(folders, checkpoint, registry, one_thread):
    """Without the merge's deduplication, the executor's signatures still share what is identical."""
    params = GenerationParams(checkpoint=CKPT, prompt="a red circle", steps=1, width=64, height=64, seed=1,
                              save_images=False)
    plan = build_plot("txt2img", params, XyzSettings(x_type="Seed", x_values="1, 2"), folders)
    single = {k: v for k, v in plan.workflows[0].items()}
    # the same graph twice under other ids: nothing is merged by id
    doubled = {}
    for prefix in ("a", "b"):
        for node_id, node in single.items():
            inputs = {name: [prefix + value[0], value[1]] if isinstance(value, list) else value
                      for name, value in node["inputs"].items()}
            doubled[prefix + node_id] = {"class_type": node["class_type"], "inputs": inputs}
    result = Executor(registry).execute(doubled)
    assert result.status == "success"
    loaders = [n for n in result.executed if doubled[n]["class_type"] == "CheckpointLoaderSimple"]
    samplers = [n for n in result.executed if doubled[n]["class_type"] == "KSampler"]
    assert len(loaders) == 1 and len(samplers) == 2


def test_merge_keeps_distinct_nodes_and_maps_each_cell_to_its_saver():
    a = {"1": {"class_type": "Load", "inputs": {"name": "m"}},
         "2": {"class_type": "Use", "inputs": {"x": ["1", 0], "seed": 1}},
         "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}}}
    b = json.loads(json.dumps(a))
    b["2"]["inputs"]["seed"] = 2
    merged, savers = merge_workflows([a, a, b])
    assert [node["class_type"] for node in merged.values()] == ["Load", "Use", "SaveImage", "Use", "SaveImage"]
    assert savers == ["3", "3", "5"] and merged["4"]["inputs"]["x"] == ["1", 0]


# -- the tabs -------------------------------------------------------------------------------------------

def form(**changes):
    values = {"checkpoint": CKPT, "prompt": "a red circle", "negative_prompt": "", "sampler_name": "euler",
              "scheduler": "normal", "steps": 1, "cfg_scale": 7.0, "seed": 3, "width": 64, "height": 64,
              "batch_size": 1, "n_iter": 1, "script": TITLE, "xyz_x_type": "Seed", "xyz_x_values": "3-4",
              "xyz_y_type": "Steps", "xyz_y_values": "1, 2", "xyz_z_type": "Nothing", "xyz_z_values": "",
              "xyz_draw_legend": True, "xyz_include_lone_images": True, "xyz_margin_size": 4}
    values.update(changes)
    return values


def test_tab_plot_shows_the_grid_then_cells_and_the_exported_workflow_remakes_them(ctx, registry):
    last = list(generate(ctx, "txt2img", form()))[-1]
    assert "Done" in last.progress
    images = last.results["images"]
    assert len(images) == 5
    grid = Image.open(images[0]["path"])
    assert grid.width > 2 * 64 + 4 and grid.height > 2 * 64 + 4  # labels and the margin
    assert parse_infotext(images[0]["infotext"])["Y Values"] == "1, 2"
    assert [parse_infotext(image["infotext"])["Seed"] for image in images[1:]] == ["3", "4", "3", "4"]
    assert read_png_metadata(images[0]["path"])["prompt"] == last.results["workflows"][0]

    exported = json.loads(open(export_workflow(ctx, "txt2img", form())).read())
    assert exported == last.results["workflows"][0]  # same seeds, same graph
    result = Executor(registry).execute(exported)
    assert result.status == "success"
    savers = [n for n in exported if exported[n]["class_type"] == "SaveImage"]
    remade = []
    for node_id in savers:
        entry = result.outputs[node_id]["images"][0]
        remade.append(pixels(Image.open(ctx.folders.output_dir / entry["subfolder"] / entry["filename"])))
    cells = [pixels(Image.open(image["path"])) for image in images[1:]]
    assert len(remade) == 4 and all(any(np.array_equal(r, c) for c in cells) for r in remade)
    assert all(any(np.array_equal(r, c) for r in remade) for c in cells)


def test_fill_puts_every_choice_of_an_axis_in_its_values(ctx):
    assert fill_values(ctx, "txt2img", "Checkpoint name", "") == CKPT
    samplers = fill_values(ctx, "img2img", "Sampler", "")
    assert samplers.startswith("DPM++ 2M,") and "Euler a" in samplers.split(",")
    assert fill_values(ctx, "txt2img", "Steps", "1-3") == "1-3"  # no list: left as typed


def test_img2img_tab_plots_denoising(ctx):
    last = list(generate(ctx, "img2img", form(init_image=Image.new("RGB", (64, 64), (200, 40, 40)),
                                              xyz_x_type="Denoising", xyz_x_values="0.2, 0.8",
                                              xyz_y_type="Nothing", xyz_include_lone_images=False)))[-1]
    images = last.results["images"]
    assert len(images) == 1 and Image.open(images[0]["path"]).width > 2 * 64
    assert parse_infotext(images[0]["infotext"])["X Values"] == "0.2, 0.8"


# -- what each axis changes (built, not run) ------------------------------------------------------------

def plot(folders, settings, **params):
    values = {"checkpoint": CKPT, "prompt": "a red circle", "steps": 1, "width": 64, "height": 64, "seed": 7,
              **params}
    return build_plot("txt2img", GenerationParams(**values), XyzSettings(**settings), folders)


def cell_values(plan, name):
    return [getattr(cell.params, name) for cell in plan.ordered_cells()]


def test_lora_weight_prompt_sr_clip_skip_and_size_axes(folders, checkpoint):
    made = plot(folders, {"x_type": "LoRA weight", "x_values": "0-1 [3]"}, prompt="a cat <lora:style:0.8>, ink")
    assert cell_values(made, "prompt") == ["a cat <lora:style:0>, ink", "a cat <lora:style:0.5>, ink",
                                           "a cat <lora:style:1>, ink"]
    assert [cell.labels for cell in made.axes][0] == ["LoRA weight: 0", "LoRA weight: 0.5", "LoRA weight: 1"]
    named = plot(folders, {"x_type": "LoRA weight", "x_values": "ink:0.2"},
                 prompt="<lora:style:1> <lora:ink:0.9:0.5>")
    assert cell_values(named, "prompt") == ["<lora:style:1> <lora:ink:0.2>"]
    for prompt, values, words in (("a cat", "0.5", "found none"), ("<lora:a:1> <lora:b:1>", "1", "NAME:weight"),
                                  ("<lora:a:1>", "b:1", "no <lora:b:...> tag")):
        with pytest.raises(BadRequest, match=words):
            plot(folders, {"x_type": "LoRA weight", "x_values": values}, prompt=prompt)

    orders = plot(folders, {"x_type": "Prompt order", "x_values": "red, circle"}, prompt="a red circle, bold")
    assert cell_values(orders, "prompt") == ["a red circle, bold", "a circle red, bold"]
    assert orders.axes[0].labels == ["red, circle", "circle, red"]
    swapped = plot(folders, {"x_type": "Prompt S/R", "x_values": "red, blue"}, negative_prompt="red things")
    assert cell_values(swapped, "negative_prompt") == ["red things", "blue things"]
    skips = plot(folders, {"x_type": "Clip skip", "x_values": "1, 2"})
    clip = [node for node in skips.workflows[0].values() if node["class_type"] == "CLIPSetLastLayer"]
    assert len(clip) == 1 and clip[0]["inputs"]["stop_at_clip_layer"] == -2
    sizes = plot(folders, {"x_type": "Size", "x_values": "64x96, 96x64"})
    assert [(c.params.width, c.params.height) for c in sizes.ordered_cells()] == [(64, 96), (96, 64)]


def test_seeds_fixed_kept_random_or_varied(folders, checkpoint):
    fixed = plot(folders, {"x_type": "Seed", "x_values": "-1, 5"})
    drawn = cell_values(fixed, "seed")
    assert drawn[0] >= 0 and drawn[1] == 5 and fixed.axes[0].values == drawn
    shared = plot(folders, {"x_type": "Steps", "x_values": "1, 2"}, seed=-1)
    assert len(set(cell_values(shared, "seed"))) == 1  # the request's -1 is drawn once for every cell
    varied = plot(folders, {"x_type": "Steps", "x_values": "1, 2", "y_type": "CFG Scale", "y_values": "5, 6",
                            "vary_seeds_x": True, "vary_seeds_y": True})
    assert cell_values(varied, "seed") == [7, 8, 9, 10]  # A1111's seed + ix + iy * len(xs)


def test_a_checkpoint_axis_is_outermost_and_loads_each_checkpoint(folders, checkpoint):
    (folders.models_dir / "checkpoints" / "other.safetensors").write_bytes(checkpoint.read_bytes())
    made = plot(folders, {"x_type": "Steps", "x_values": "1, 2", "y_type": "Checkpoint name",
                          "y_values": "tiny-sd1, other.safetensors"})
    workflow = made.workflows[0]
    loaders = [n for n in workflow if workflow[n]["class_type"] == "CheckpointLoaderSimple"]
    assert [workflow[n]["inputs"]["ckpt_name"] for n in loaders] == [CKPT, "other.safetensors"]
    assert [cell.position for cell in made.cells] == [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]
    assert made.axes[1].labels == [CKPT, "other.safetensors"]
