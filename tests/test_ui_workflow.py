"""Editor-format (UI) workflows converted as ComfyUI's frontend converts them when it queues one:
PrimitiveNode values, reroutes, bypassed (mode 4) and muted (mode 2) nodes, subgraphs; then Comfy-Org's
own templates (the comfyui-workflow-templates package) through the Workflows tab, a PNG and `inkwash run`."""
from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from inkwash.nodes.executor import Executor
from inkwash.nodes.graph import is_link
from inkwash.nodes.registry import object_info
from inkwash.webui.ui_workflow import VIRTUAL_TYPES, ui_to_api
from tiny_models import tiny_sdxl, write_tiny_checkpoint

CKPT = "tiny-sd1.safetensors"


@pytest.fixture(scope="module")
def info(registry):
    return object_info(registry)


def node(node_id, kind, inputs=(), outputs=(), widgets=None, mode=0, **extra):
    """An editor node: inputs as (name, type, link) and outputs as (name, type)."""
    return {"id": node_id, "type": kind, "mode": mode, "widgets_values": widgets or [],
            "inputs": [{"name": n, "type": t, "link": link, **({"widget": {"name": n}} if w else {})}
                       for n, t, link, *w in inputs],
            "outputs": [{"name": n, "type": t, "links": []} for n, t in outputs], **extra}


def graph(nodes, links, **extra):
    return {"version": 0.4, "nodes": nodes, "links": [list(link) for link in links], **extra}


def test_primitives_reroutes_bypassed_and_muted_nodes_resolve_as_the_frontend_does(info):
    ui = graph([
        node(1, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
             widgets=[CKPT]),
        # a bypassed LoRA: MODEL and CLIP pass straight through, each to the input of its own type
        node(2, "LoraLoader", [("model", "MODEL", 1), ("clip", "CLIP", 2)],
             [("MODEL", "MODEL"), ("CLIP", "CLIP")], ["gone.safetensors", 1.0, 1.0], mode=4),
        node(3, "Reroute", [("", "*", 3)], [("", "CLIP")]),
        node(4, "Reroute", [("", "*", 4)], [("", "CLIP")]),  # two reroutes in a row
        node(5, "CLIPTextEncode", [("clip", "CLIP", 5), ("text", "STRING", 6, True)],
             [("CONDITIONING", "CONDITIONING")], ["the stale value the primitive replaces"], title="Positive"),
        node(6, "PrimitiveNode", outputs=[("STRING", "STRING")], widgets=["a red circle"]),
        node(7, "CLIPTextEncode", [("clip", "CLIP", 7)], [("CONDITIONING", "CONDITIONING")], ["muted"], mode=2),
        node(8, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[64, 64, 1]),
        node(9, "LatentUpscaleBy", [("samples", "LATENT", 8)], [("LATENT", "LATENT")], ["nearest-exact", 2.0], mode=4),
        node(10, "KSampler", [("model", "MODEL", 9), ("positive", "CONDITIONING", 10),
                              ("negative", "CONDITIONING", 11), ("latent_image", "LATENT", 12),
                              ("seed", "INT", 13, True)], [("LATENT", "LATENT")],
             [1, "randomize", 2, 5.0, "euler", "normal", 1.0]),
        node(11, "PrimitiveNode", outputs=[("INT", "INT")], widgets=[77, "fixed"]),
        node(12, "Note", widgets=["a note"]),
    ], [
        (1, 1, 0, 2, 0, "MODEL"), (2, 1, 1, 2, 1, "CLIP"), (3, 2, 1, 3, 0, "CLIP"), (4, 3, 0, 4, 0, "CLIP"),
        (5, 4, 0, 5, 0, "CLIP"), (6, 6, 0, 5, 1, "STRING"), (7, 1, 1, 7, 0, "CLIP"), (8, 8, 0, 9, 0, "LATENT"),
        (9, 2, 0, 10, 0, "MODEL"), (10, 5, 0, 10, 1, "CONDITIONING"), (11, 7, 0, 10, 2, "CONDITIONING"),
        (12, 9, 0, 10, 3, "LATENT"), (13, 11, 0, 10, 4, "INT"),
    ])
    assert ui_to_api(ui, info) == {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]},
              "_meta": {"title": "Positive"}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        # the muted negative prompt's link is gone (the frontend's rule); validation will say it is missing
        "10": {"class_type": "KSampler", "inputs": {
            "seed": 77, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", 0], "positive": ["5", 0], "latent_image": ["8", 0]}},
    }


def test_a_bypassed_node_without_an_input_of_the_wanted_type_passes_nothing(info):
    ui = graph([
        node(1, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[64, 64, 1]),
        node(2, "VAEDecode", [("samples", "LATENT", 1), ("vae", "VAE", None)], [("IMAGE", "IMAGE")], mode=4),
        node(3, "SaveImage", [("images", "IMAGE", 2)], widgets=["x"]),
    ], [(1, 1, 0, 2, 0, "LATENT"), (2, 2, 0, 3, 0, "IMAGE")])
    assert ui_to_api(ui, info)["3"] == {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}


def test_a_bypassed_node_passes_the_input_of_the_consumers_type_when_its_own_slot_does_not_fit(info):
    ui = graph([
        node(1, "LoadImage", outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")], widgets=["example.png", "image"]),
        # any node type, bypassed: output 0 is a MASK, input 0 an IMAGE, so the MASK input is used
        node(2, "SomeMaskFilter", [("image", "IMAGE", 1), ("mask", "MASK", 2)], [("MASK", "MASK")], mode=4),
        node(3, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[64, 64, 1]),
        node(4, "SetLatentNoiseMask", [("samples", "LATENT", 3), ("mask", "MASK", 4)], [("LATENT", "LATENT")]),
    ], [(1, 1, 0, 2, 0, "IMAGE"), (2, 1, 1, 2, 1, "MASK"), (3, 3, 0, 4, 0, "LATENT"), (4, 2, 0, 4, 1, "MASK")])
    api = ui_to_api(ui, info)
    assert "2" not in api
    assert api["4"]["inputs"] == {"samples": ["3", 0], "mask": ["1", 1]}


def subgraph_definition():
    """A subgraph "encode": CLIP and a promoted text widget in, CONDITIONING out; a bypassed
    CLIPSetLastLayer inside."""
    return {
        "id": "5a1b-encode", "name": "encode",
        "inputs": [{"id": "i1", "name": "clip", "type": "CLIP", "linkIds": [1]},
                   {"id": "i2", "name": "text", "type": "STRING", "linkIds": [2]}],
        "outputs": [{"id": "o1", "name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [4]}],
        "nodes": [node(1, "CLIPSetLastLayer", [("clip", "CLIP", 1)], [("CLIP", "CLIP")], [-2], mode=4),
                  node(2, "CLIPTextEncode", [("clip", "CLIP", 3), ("text", "STRING", 2, True)],
                       [("CONDITIONING", "CONDITIONING")], ["inner default"])],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "CLIP"},
                  {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 2, "target_slot": 1, "type": "STRING"},
                  {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "CLIP"},
                  {"id": 4, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0,
                   "type": "CONDITIONING"}],
    }


def test_subgraphs_expand_with_frontend_ids_and_take_their_outer_links_and_widgets(info):
    ui = graph([
        node(1, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
             widgets=[CKPT]),
        node(7, "5a1b-encode", [("clip", "CLIP", 1), ("text", "STRING", None, True)],
             [("CONDITIONING", "CONDITIONING")], ["from the outer widget"]),
        node(8, "5a1b-encode", [("clip", "CLIP", 2), ("text", "STRING", None, True)],
             [("CONDITIONING", "CONDITIONING")], []),  # no outer value: the inner widget's stays
        node(9, "ConditioningCombine", [("conditioning_1", "CONDITIONING", 3), ("conditioning_2", "CONDITIONING", 4)],
             [("CONDITIONING", "CONDITIONING")]),
    ], [(1, 1, 1, 7, 0, "CLIP"), (2, 1, 1, 8, 0, "CLIP"), (3, 7, 0, 9, 0, "CONDITIONING"),
        (4, 8, 0, 9, 1, "CONDITIONING")], definitions={"subgraphs": [subgraph_definition()]})
    api = ui_to_api(ui, info)
    assert set(api) == {"1", "7:2", "8:2", "9"}
    assert api["7:2"] == {"class_type": "CLIPTextEncode", "inputs": {"text": "from the outer widget", "clip": ["1", 1]}}
    assert api["8:2"]["inputs"] == {"text": "inner default", "clip": ["1", 1]}
    assert api["9"]["inputs"] == {"conditioning_1": ["7:2", 0], "conditioning_2": ["8:2", 0]}


def test_a_legacy_group_node_is_refused_saying_what_to_do(info):
    from inkwash.webui.ui_workflow import UIWorkflowError

    ui = graph([node(5, "workflow>encode both", outputs=[("CONDITIONING", "CONDITIONING")])], [],
               extra={"groupNodes": {"encode both": {"nodes": [], "links": [], "external": []}}})
    with pytest.raises(UIWorkflowError, match=r"node 5 is a group node .*graph editor"):
        ui_to_api(ui, info)


# -- Comfy-Org's templates -------------------------------------------------------------------------------

templates_json = pytest.importorskip("comfyui_workflow_templates_json")
TEMPLATES = sorted((resources.files(templates_json) / "templates").glob("*.json"))


def editor_templates() -> list[tuple[str, dict]]:
    found = []
    for path in TEMPLATES:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):
            found.append((path.stem, data))
    return found


def test_every_template_in_the_package_converts(info):
    templates = editor_templates()
    assert len(templates) > 100
    for name, data in templates:
        api = ui_to_api(data, info)
        assert api, name
        for node_id, entry in api.items():
            assert isinstance(entry["class_type"], str) and entry["class_type"] not in VIRTUAL_TYPES, (name, node_id)
            for value in entry["inputs"].values():  # every link leads to a node of the prompt
                if is_link(value):
                    assert value[0] in api, (name, node_id, value)


def test_templates_of_known_nodes_validate(info, registry, folders):
    """Every template made only of node types Inkwash has validates once the models it names exist."""
    checked = []
    for name, data in editor_templates():
        api = ui_to_api(data, info)
        if not all(entry["class_type"] in registry for entry in api.values()):
            continue
        for entry in api.values():
            for key, value in entry["inputs"].items():
                if key.endswith("_name") and isinstance(value, str) and "." in value:
                    kind = {"ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae",
                            "control_net_name": "controlnet"}.get(key)
                    if kind:
                        (folders.models_dir / kind).mkdir(parents=True, exist_ok=True)
                        (folders.models_dir / kind / value).touch()
        validation = Executor(registry).validate(api)
        assert validation.ok, (name, validation.response())
        checked.append(name)
    assert {"image_sdxl_simple", "sdxl_simple_example", "sdxl_refiner_prompt_example"} <= set(checked)


def template(name: str) -> dict:
    from comfyui_workflow_templates_core import get_asset_path

    return json.loads(Path(get_asset_path(name, f"{name}.json")).read_text(encoding="utf-8"))


def run_cli(capsys, *args) -> tuple[int, list[dict]]:
    from inkwash.webui.cli import main

    code = main(["run", *args])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_sd_style_template_runs_with_inkwash_run_on_the_tiny_checkpoint(checkpoint, folders, tmp_path, capsys,
                                                                         one_thread):
    path = tmp_path / "image_sdxl_simple.json"
    path.write_text(json.dumps(template("image_sdxl_simple")))  # editor format, as the package ships it
    code, events = run_cli(capsys, str(path), "--set", f"15.ckpt_name={CKPT}", "--set", "13.width=64",
                           "--set", "13.height=64", "--set", "12.steps=2",
                           "--models-dir", str(folders.models_dir), "--output-dir", str(folders.output_dir))
    assert code == 0, events[-3:]
    assert [e["type"] for e in events][-2:] == ["execution_success", "executing"]
    (image,) = folders.output_dir.glob("sdxl_simple*.png")
    assert Image.open(image).size == (64, 64)


def test_sdxl_template_with_primitives_runs_from_a_png_dropped_on_the_workflows_tab(folders, tmp_path, one_thread):
    """sdxl_simple_example (base, then refiner; PrimitiveNodes share steps, the switch step and the
    prompts) on tiny SDXL checkpoints saved under the names the template asks for."""
    from inkwash.webui.context import ServerContext
    from inkwash.webui.tabs import workflow_files

    from inkwash.nodes.registry import core_nodes

    folder = folders.models_dir / "checkpoints"
    folder.mkdir(parents=True)
    write_tiny_checkpoint(folder, "sd_xl_base_1.0.safetensors", tiny_sdxl())
    write_tiny_checkpoint(folder, "sd_xl_refiner_1.0.safetensors", tiny_sdxl(refiner=True, seed=1))
    info = PngInfo()
    info.add_text("workflow", json.dumps(template("sdxl_simple_example")))  # only the editor format
    png = tmp_path / "shared.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)

    registry = core_nodes()
    ctx = ServerContext(queue=None, hub=None, folders=folders, registry=registry, data_dir=tmp_path)
    api = workflow_files.load_upload(ctx, png)
    base, refiner = api["10"]["inputs"], api["11"]["inputs"]
    assert (base["steps"], base["end_at_step"], refiner["steps"], refiner["start_at_step"]) == (25, 20, 25, 20)
    assert api["6"]["inputs"]["text"] == api["15"]["inputs"]["text"]  # one primitive, two prompts
    api["5"]["inputs"].update(width=64, height=64)
    result = Executor(registry).execute(api)
    assert result.status == "success", result.error
    ref = result.outputs["19"]["images"][0]
    assert Image.open(folders.output_dir / ref["subfolder"] / ref["filename"]).size == (64, 64)
