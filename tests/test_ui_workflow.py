"""Editor-format (UI) workflows converted as ComfyUI's frontend converts them when it queues one:
PrimitiveNode values, reroutes, bypassed (mode 4) and muted (mode 2) nodes, subgraphs, legacy group nodes;
then Comfy-Org's own templates (the comfyui-workflow-templates package) through the Workflows tab, a PNG
and `inkwash run`."""
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
    return {"id": node_id, "type": kind, "mode": mode, "pos": [0, 0], "size": [200, 100],
            "widgets_values": widgets or [],
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
            # saved by ComfyUI: the widgets Inkwash adds take their defaults, as the editor shows them
            "noise_rule": "comfyui", "eta_noise_seed_delta": 0,
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


# -- legacy group nodes ("Convert to Group Node"), as the frontend saves and queues them ------------------

def txt2img_twin():
    """The txt2img chain with every node at the top level: the ungrouped twin of txt2img_grouped()."""
    return graph([
        node(4, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
             widgets=[CKPT]),
        node(6, "CLIPTextEncode", [("clip", "CLIP", 1)], [("CONDITIONING", "CONDITIONING")], ["a red circle"]),
        node(7, "CLIPTextEncode", [("clip", "CLIP", 2)], [("CONDITIONING", "CONDITIONING")], ["blurry"]),
        node(5, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[64, 64, 1]),
        node(3, "KSampler", [("model", "MODEL", 3), ("positive", "CONDITIONING", 4),
                             ("negative", "CONDITIONING", 5), ("latent_image", "LATENT", 6)], [("LATENT", "LATENT")],
             [42, "fixed", 2, 5.0, "euler", "normal", 1.0, "comfyui"]),
        node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", "IMAGE")]),
        node(9, "SaveImage", [("images", "IMAGE", 9)], widgets=["twin"]),
    ], [(1, 4, 1, 6, 0, "CLIP"), (2, 4, 1, 7, 0, "CLIP"), (3, 4, 0, 3, 0, "MODEL"), (4, 6, 0, 3, 1, "CONDITIONING"),
        (5, 7, 0, 3, 2, "CONDITIONING"), (6, 5, 0, 3, 3, "LATENT"), (7, 3, 0, 8, 0, "LATENT"), (8, 4, 2, 8, 1, "VAE"),
        (9, 8, 0, 9, 0, "IMAGE")])


def txt2img_grouped(separator=">"):
    """The same chain after "Convert to Group Node" on everything but the loader and SaveImage: node 10,
    group node "txt2img", as the frontend saves it. Inner nodes keep the values they had when grouped
    (stale here); the group node's widgets_values are the current ones."""
    inner = [
        node(6, "CLIPTextEncode", [("clip", "CLIP", 1)], [("CONDITIONING", "CONDITIONING")], ["stale"]),
        node(7, "CLIPTextEncode", [("clip", "CLIP", 2)], [("CONDITIONING", "CONDITIONING")], ["stale"]),
        node(5, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[512, 512, 4]),
        node(3, "KSampler", [("model", "MODEL", 3), ("positive", "CONDITIONING", 4),
                             ("negative", "CONDITIONING", 5), ("latent_image", "LATENT", 6)], [("LATENT", "LATENT")],
             [0, "randomize", 20, 8.0, "dpmpp_2m", "karras", 0.5, "a1111"]),
        node(8, "VAEDecode", [("samples", "LATENT", 7), ("vae", "VAE", 8)], [("IMAGE", "IMAGE")]),
    ]
    definition = {
        "nodes": inner,
        # [origin index, origin slot, target index, target slot, origin's old id, type]; null: from outside
        "links": [[None, 1, 0, 0, 4, "CLIP"], [None, 1, 1, 0, 4, "CLIP"], [None, 0, 3, 0, 4, "MODEL"],
                  [0, 0, 3, 1, 6, "CONDITIONING"], [1, 0, 3, 2, 7, "CONDITIONING"], [2, 0, 3, 3, 5, "LATENT"],
                  [3, 0, 4, 0, 3, "LATENT"], [None, 2, 4, 1, 4, "VAE"]],
        "external": [[4, 0, "IMAGE"]],
    }
    # The group node's widgets: each inner node's in order, a second "text" renamed after its node type,
    # the seed followed by its control_after_generate value.
    widgets = ["a red circle", "blurry", 64, 64, 1, 42, "fixed", 2, 5.0, "euler", "normal", 1.0, "comfyui"]
    return graph([
        node(4, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
             widgets=[CKPT]),
        node(10, f"workflow{separator}txt2img", [("clip", "CLIP", 1), ("CLIPTextEncode clip", "CLIP", 2),
                                                  ("model", "MODEL", 3), ("vae", "VAE", 4)],
             [("IMAGE", "IMAGE")], widgets),
        node(9, "SaveImage", [("images", "IMAGE", 5)], widgets=["twin"]),
    ], [(1, 4, 1, 10, 0, "CLIP"), (2, 4, 1, 10, 1, "CLIP"), (3, 4, 0, 10, 2, "MODEL"), (4, 4, 2, 10, 3, "VAE"),
        (5, 10, 0, 9, 0, "IMAGE")],
        extra={"groupNodes": {"txt2img": definition}},
        groups=[{"title": "just a box", "bounding": [0, 0, 900, 600], "color": "#3f789e"}])


def renamed(api, ids):
    """An API workflow with node ids replaced (in keys and links) as `ids` says."""
    def rename(value):
        return [ids.get(value[0], value[0]), value[1]] if is_link(value) else value
    return {ids.get(key, key): {**entry, "inputs": {k: rename(v) for k, v in entry["inputs"].items()}}
            for key, entry in api.items()}


TWIN_IDS = {"6": "10:0", "7": "10:1", "5": "10:2", "3": "10:3", "8": "10:4"}


@pytest.mark.parametrize("separator", [">", "/"])
def test_a_group_node_converts_to_the_graph_of_its_ungrouped_twin_with_frontend_ids(info, separator):
    api = ui_to_api(txt2img_grouped(separator), info)
    assert api == renamed(ui_to_api(txt2img_twin(), info), TWIN_IDS)
    assert api["10:3"] == {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "noise_rule": "comfyui", "eta_noise_seed_delta": 0, "model": ["4", 0], "positive": ["10:0", 0],
        "negative": ["10:1", 0], "latent_image": ["10:2", 0]}}
    assert api["9"]["inputs"]["images"] == ["10:4", 0]


def test_a_group_node_runs_to_the_same_image_as_its_ungrouped_twin(registry, checkpoint, folders, one_thread):
    images = []
    for ui in (txt2img_twin(), txt2img_grouped()):
        result = Executor(registry).execute(ui_to_api(ui, object_info(registry)))
        assert result.status == "success", result.error
        ref = result.outputs["9"]["images"][0]
        images.append(Image.open(folders.output_dir / ref["subfolder"] / ref["filename"]).convert("RGB"))
    assert images[0].size == (64, 64)
    assert images[0].tobytes() == images[1].tobytes()


def sample_grouped():
    """Group node 20 "sample": a titled PrimitiveNode feeds the KSampler's seed (a widget converted to
    an input); the latent goes through a bypassed LatentUpscaleBy and a reroute; the KSampler's cfg,
    converted but fed from nothing inside, becomes a group input, linked to a top-level primitive."""
    seed_primitive = node(11, "PrimitiveNode", title="Seed", widgets=[5, "fixed"])
    seed_primitive["outputs"] = [{"name": "INT", "type": "INT", "widget": {"name": "seed"}, "links": [14]}]
    inner = [
        seed_primitive,
        node(12, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[512, 512, 1]),
        node(13, "LatentUpscaleBy", [("samples", "LATENT", 11)], [("LATENT", "LATENT")], ["nearest-exact", 1.5],
             mode=4),
        node(14, "Reroute", [("", "*", 12)], [("", "LATENT")]),
        node(15, "KSampler", [("model", "MODEL", 1), ("positive", "CONDITIONING", 2),
                              ("negative", "CONDITIONING", 3), ("latent_image", "LATENT", 13),
                              ("seed", "INT", 14, True), ("cfg", "FLOAT", None, True)], [("LATENT", "LATENT")],
             [0, "fixed", 20, 8.0, "euler", "normal", 1.0, "comfyui"]),
    ]
    definition = {"nodes": inner, "external": [[4, 0, "LATENT"]], "links": [
        [1, 0, 2, 0, 12, "LATENT"], [2, 0, 3, 0, 13, "LATENT"], [3, 0, 4, 3, 14, "LATENT"], [0, 0, 4, 4, 11, "INT"],
        [None, 0, 4, 0, 1, "MODEL"], [None, 0, 4, 1, 2, "CONDITIONING"], [None, 0, 4, 2, 3, "CONDITIONING"]]}
    # widgets: the primitive's (named after its title, with its control), EmptyLatentImage's,
    # LatentUpscaleBy's, the KSampler's own, then the converted cfg last
    widgets = [77, "randomize", 64, 64, 1, "bilinear", 3.0, 2, "dpmpp_2m", "karras", 1.0, "comfyui", 6.5]
    return graph([
        node(1, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
             widgets=[CKPT]),
        node(2, "CLIPTextEncode", [("clip", "CLIP", 1)], [("CONDITIONING", "CONDITIONING")], ["a cat"]),
        node(20, "workflow>sample", [("model", "MODEL", 2), ("positive", "CONDITIONING", 3),
                                     ("negative", "CONDITIONING", 4), ("cfg", "FLOAT", 5, True)],
             [("LATENT", "LATENT")], widgets),
        node(21, "PrimitiveNode", outputs=[("FLOAT", "FLOAT")], widgets=[6.0]),
        node(22, "VAEDecode", [("samples", "LATENT", 6), ("vae", "VAE", 7)], [("IMAGE", "IMAGE")]),
    ], [(1, 1, 1, 2, 0, "CLIP"), (2, 1, 0, 20, 0, "MODEL"), (3, 2, 0, 20, 1, "CONDITIONING"),
        (4, 2, 0, 20, 2, "CONDITIONING"), (5, 21, 0, 20, 3, "FLOAT"), (6, 20, 0, 22, 0, "LATENT"),
        (7, 1, 2, 22, 1, "VAE")], extra={"groupNodes": {"sample": definition}})


def test_inside_a_group_primitives_converted_widgets_reroutes_and_bypassed_nodes_resolve(info):
    ui = sample_grouped()
    definition = ui["extra"]["groupNodes"]["sample"]
    api = ui_to_api(ui, info)
    assert set(api) == {"1", "2", "20:1", "20:4", "22"}  # no primitive, reroute or bypassed node
    assert api["20:1"]["inputs"] == {"width": 64, "height": 64, "batch_size": 1}
    assert api["20:4"]["inputs"] == {
        "seed": 77, "steps": 2, "cfg": 6.0, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0,
        "noise_rule": "comfyui", "eta_noise_seed_delta": 0, "model": ["1", 0], "positive": ["2", 0],
        "negative": ["2", 0], "latent_image": ["20:1", 0]}
    assert api["22"]["inputs"] == {"samples": ["20:4", 0], "vae": ["1", 2]}

    # the LatentUpscaleBy switched back on: its widgets take the group node's values
    definition["nodes"][2]["mode"] = 0
    api = ui_to_api(ui, info)
    assert api["20:2"]["inputs"] == {"upscale_method": "bilinear", "scale_by": 3.0, "samples": ["20:1", 0]}
    assert api["20:4"]["inputs"]["latent_image"] == ["20:2", 0]

    # the primitive's group widget turned into an input and linked: the linked value wins
    ui["nodes"][2]["inputs"].append({"name": "Seed value", "type": "INT", "widget": {"name": "Seed value"}, "link": 8})
    ui["nodes"].append(node(23, "PrimitiveNode", outputs=[("INT", "INT")], widgets=[99, "fixed"]))
    ui["links"].append([8, 23, 0, 20, 4, "INT"])
    assert ui_to_api(ui, info)["20:4"]["inputs"]["seed"] == 99

    # a muted group node leaves its consumer without the input
    ui["nodes"][2]["mode"] = 2
    assert ui_to_api(ui, info)["22"]["inputs"] == {"vae": ["1", 2]}


@pytest.mark.parametrize("saved_by, sampler_values, expected", [
    ("ComfyUI", [], {"noise_rule": "comfyui", "eta_noise_seed_delta": 0}),  # the editor's defaults
    ("Inkwash, every added widget", ["comfyui_nv", 3], {"noise_rule": "comfyui_nv", "eta_noise_seed_delta": 3}),
])
def test_a_group_saved_without_or_with_inkwashs_added_widgets_keeps_its_values_in_place(info, saved_by,
                                                                                     sampler_values, expected):
    """ComfyUI's KSampler has no noise_rule or eta_noise_seed_delta widget, so a group it saved has no values
    for them; the group's later widgets (the converted cfg here) still get their own values."""
    ui = sample_grouped()
    widgets = ui["nodes"][2]["widgets_values"]
    ui["nodes"][2]["widgets_values"] = [*widgets[:11], *sampler_values, widgets[-1]]
    inner_sampler = ui["extra"]["groupNodes"]["sample"]["nodes"][4]
    inner_sampler["widgets_values"] = [*inner_sampler["widgets_values"][:7], *sampler_values]
    ui["nodes"][2]["inputs"].pop()  # the cfg group widget unlinked: its own value counts
    api = ui_to_api(ui, info)
    assert api["20:4"]["inputs"] == {
        "seed": 77, "steps": 2, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0,
        **expected, "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["20:1", 0]}


def txt2img_configured():
    """txt2img_grouped() where an inner output linked inside and outside the group (the definition's
    `external`) stays a group output, `config` hides one and renames an input, and a group widget
    turned into an input (the steps) is linked to a top-level primitive."""
    ui = txt2img_grouped()
    definition = ui["extra"]["groupNodes"]["txt2img"]
    definition["external"] = [[3, 0, "LATENT"], [4, 0, "IMAGE"], [2, 0, "LATENT"]]
    definition["config"] = {"2": {"output": {"0": {"visible": False}}}, "4": {"input": {"vae": {"name": "decoder"}}}}
    group = ui["nodes"][1]
    group["inputs"][3]["name"] = "decoder"
    group["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 6})
    # outputs: KSampler's LATENT (used inside and out), then VAEDecode's IMAGE; EmptyLatentImage's is hidden
    ui["nodes"].append(node(11, "SaveLatent", [("samples", "LATENT", 7)], widgets=["latents/x"]))
    ui["nodes"].append(node(12, "PrimitiveNode", outputs=[("INT", "INT")], widgets=[3, "fixed"]))
    ui["nodes"][2]["inputs"][0]["link"] = 8
    ui["links"] = [link for link in ui["links"] if link[0] != 5]
    ui["links"] += [[6, 12, 0, 10, 4, "INT"], [7, 10, 0, 11, 0, "LATENT"], [8, 10, 1, 9, 0, "IMAGE"]]
    return ui


def test_group_node_outputs_and_linked_widgets_follow_the_definition(info):
    api = ui_to_api(txt2img_configured(), info)
    assert api["11"]["inputs"]["samples"] == ["10:3", 0]
    assert api["9"]["inputs"]["images"] == ["10:4", 0]
    assert api["10:4"]["inputs"]["vae"] == ["4", 2]
    assert api["10:3"]["inputs"]["steps"] == 3


def test_a_muted_inner_node_is_left_out_with_its_links(info):
    ui = txt2img_grouped()
    ui["extra"]["groupNodes"]["txt2img"]["nodes"][1]["mode"] = 2  # the negative prompt
    api = ui_to_api(ui, info)
    assert "10:1" not in api and "negative" not in api["10:3"]["inputs"]


def saved_inner(kind, inputs=(), outputs=(), widgets=None, index=0, **extra):
    """An inner node as the frontend stores it in extra.groupNodes: id -1, its index, localized names."""
    entry = node(-1, kind, inputs, outputs, widgets, index=index, **extra)
    for slot in entry["inputs"] + entry["outputs"]:
        slot["localized_name"] = slot["name"]
    if widgets is None:
        del entry["widgets_values"]
    return entry


def custom_grouped():
    """A group node over the custom-sampling chain, shaped like one saved by the frontend: inner
    inputs the group feeds are named after the inner node when the name is taken ("BasicGuider
    model"), both SamplerCustomAdvanced outputs are group outputs."""
    inner = [
        saved_inner("KSamplerSelect", outputs=[("SAMPLER", "SAMPLER")], widgets=["heun"], index=0),
        saved_inner("RandomNoise", outputs=[("NOISE", "NOISE")], widgets=[1, "randomize"], index=1),
        saved_inner("BasicScheduler", [("model", "MODEL", None)], [("SIGMAS", "SIGMAS")], ["karras", 20, 0.5],
                    index=2),
        saved_inner("CLIPTextEncode", [("clip", "CLIP", None)], [("CONDITIONING", "CONDITIONING")], ["old"],
                    index=3, title="CLIP Text Encode (Positive Prompt)"),
        saved_inner("BasicGuider", [("model", "MODEL", None), ("conditioning", "CONDITIONING", None)],
                    [("GUIDER", "GUIDER")], index=4),
        saved_inner("SamplerCustomAdvanced", [("noise", "NOISE", None), ("guider", "GUIDER", None),
                                              ("sampler", "SAMPLER", None), ("sigmas", "SIGMAS", None),
                                              ("latent_image", "LATENT", None)],
                    [("output", "LATENT"), ("denoised_output", "LATENT")], index=5),
    ]
    definition = {"nodes": inner, "external": [[5, 0, "LATENT"]], "links": [
        [None, 0, 2, 0, 1, "MODEL"], [None, 1, 3, 0, 1, "CLIP"], [None, 0, 4, 0, 1, "MODEL"],
        [3, 0, 4, 1, 6, "CONDITIONING"], [1, 0, 5, 0, 25, "NOISE"], [4, 0, 5, 1, 22, "GUIDER"],
        [0, 0, 5, 2, 16, "SAMPLER"], [2, 0, 5, 3, 17, "SIGMAS"], [None, 0, 5, 4, 2, "LATENT"]]}
    return graph([
        node(1, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
             widgets=[CKPT]),
        node(2, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[64, 64, 1]),
        node(30, "workflow>custom", [("model", "MODEL", 1), ("clip", "CLIP", 2), ("BasicGuider model", "MODEL", 3),
                                     ("latent_image", "LATENT", 4)],
             [("output", "LATENT"), ("denoised_output", "LATENT")],
             ["euler", 123, "fixed", "normal", 2, 1.0, "a lighthouse"]),
        node(31, "VAEDecode", [("samples", "LATENT", 5), ("vae", "VAE", 6)], [("IMAGE", "IMAGE")]),
    ], [(1, 1, 0, 30, 0, "MODEL"), (2, 1, 1, 30, 1, "CLIP"), (3, 1, 0, 30, 2, "MODEL"), (4, 2, 0, 30, 3, "LATENT"),
        (5, 30, 1, 31, 0, "LATENT"), (6, 1, 2, 31, 1, "VAE")], extra={"groupNodes": {"custom": definition}})


def test_a_custom_sampling_group_node_as_the_frontend_saves_it(info):
    api = ui_to_api(custom_grouped(), info)
    title = {"_meta": {"title": "CLIP Text Encode (Positive Prompt)"}}
    assert {key: value for key, value in api.items() if key.startswith("30:")} == {
        "30:0": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "30:1": {"class_type": "RandomNoise", "inputs": {"noise_seed": 123}},
        "30:2": {"class_type": "BasicScheduler", "inputs": {"scheduler": "normal", "steps": 2, "denoise": 1.0,
                                                            "model": ["1", 0]}},
        "30:3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["1", 1]}, **title},
        "30:4": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["30:3", 0]}},
        "30:5": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["30:1", 0], "guider": ["30:4", 0], "sampler": ["30:0", 0], "sigmas": ["30:2", 0],
            "latent_image": ["2", 0]}},
    }
    assert api["31"]["inputs"]["samples"] == ["30:5", 1]  # the group's second output


def load_grouped():
    """Group node 5 over LoadImage and ImageScaleBy: the image combo's upload button keeps a value of its
    own in the group node's widgets_values; LoadImage's unused MASK is the group's first output."""
    inner = [node(1, "LoadImage", outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")], widgets=["old.png", "image"]),
             node(2, "ImageScaleBy", [("image", "IMAGE", 1)], [("IMAGE", "IMAGE")], ["nearest-exact", 1.0])]
    definition = {"nodes": inner, "links": [[0, 0, 1, 0, 1, "IMAGE"]], "external": []}
    return graph([node(5, "workflow>load", outputs=[("MASK", "MASK"), ("IMAGE", "IMAGE")],
                       widgets=["example.png", "image", "bilinear", 0.5]),
                  node(6, "SaveImage", [("images", "IMAGE", 1)], widgets=["x"])],
                 [(1, 5, 1, 6, 0, "IMAGE")], extra={"groupNodes": {"load": definition}})


def test_an_image_upload_widget_in_a_group_keeps_its_place(info):
    api = ui_to_api(load_grouped(), info)
    assert api["5:0"]["inputs"] == {"image": "example.png"}
    assert api["5:1"]["inputs"] == {"upscale_method": "bilinear", "scale_by": 0.5, "image": ["5:0", 0]}
    assert api["6"]["inputs"]["images"] == ["5:1", 0]


def by_rank(api):
    """An API workflow with each expanded node's id made "group<i>:<rank>" (i: which group node, rank:
    the inner node's place), to compare conversions that number the nodes they expand differently."""
    groups = sorted({key.split(":")[0] for key in api if ":" in key}, key=int)
    ids = {}
    for number, group in enumerate(groups):
        inner = sorted((key for key in api if key.startswith(group + ":")), key=lambda key: int(key.split(":")[1]))
        ids.update({key: f"group{number}:{rank}" for rank, key in enumerate(inner)})
    return {key: (entry["class_type"], entry["inputs"]) for key, entry in renamed(api, ids).items()}


@pytest.mark.browser
def test_group_nodes_convert_as_the_bundled_frontend_queues_them(tmp_path, folders, registry):
    """The editor Inkwash serves (ComfyUI's frontend) queues the same nodes, values and links for these
    group nodes as the conversion; it turns group nodes into subgraphs on load, so its ids differ. (Not
    sample_grouped(): that editor's subgraphs drop an inner PrimitiveNode's value, which the group node
    code put into the widgets it feeds, as the conversion does.)"""
    from inkwash.webui import graph_editor

    if graph_editor.frontend_dir() is None or not Path("/usr/bin/chromium").exists():
        pytest.skip("no bundled frontend or no /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    uvicorn = pytest.importorskip("uvicorn")
    import socket
    import threading
    import time

    from fastapi import FastAPI

    from inkwash.webui import comfy_api
    from inkwash.webui.context import ServerContext
    from inkwash.webui.events import EventHub
    from inkwash.webui.jobs import JobQueue

    (folders.models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folders.models_dir / "checkpoints" / CKPT).touch()
    hub = EventHub()
    ctx = ServerContext(queue=JobQueue(tmp_path / "jobs.sqlite", registry, hub), hub=hub, folders=folders,
                        registry=registry, data_dir=tmp_path / "data")
    app = FastAPI()
    for prefix in ("", "/api"):
        app.include_router(comfy_api.router(ctx), prefix=prefix)
        app.include_router(graph_editor.router(ctx), prefix=prefix)
    graph_editor.mount_editor(app, ctx)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    info = object_info(registry)
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.1)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/graph/")
            page.wait_for_function("() => window.app?.graph?._nodes?.length > 0", timeout=120_000)
            muted = txt2img_grouped()
            muted["extra"]["groupNodes"]["txt2img"]["nodes"][1]["mode"] = 2
            for ui in (txt2img_grouped(), txt2img_grouped("/"), txt2img_configured(), muted, custom_grouped(),
                       load_grouped()):
                page.evaluate("async (graph) => { await app.loadGraphData(graph) }", ui)
                queued = page.evaluate("async () => (await app.graphToPrompt()).output")
                assert any(":" in key for key in queued)  # expanded there too
                for entry in queued.values():  # the upload button's value, which no node reads
                    if entry["class_type"] == "LoadImage":
                        assert entry["inputs"].pop("upload") == "image"
                assert by_rank(queued) == by_rank(ui_to_api(ui, info))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_group_node_without_a_definition_is_refused_naming_the_node(info):
    from inkwash.webui.ui_workflow import UIWorkflowError

    ui = graph([node(5, "workflow>encode both", outputs=[("CONDITIONING", "CONDITIONING")])], [],
               extra={"groupNodes": {"encode": {"nodes": [], "links": [], "external": []}}})
    with pytest.raises(UIWorkflowError, match=r"node 5 is a group node \('workflow>encode both'\).*"
                                              r"no group node 'encode both'"):
        ui_to_api(ui, info)


def test_a_group_node_that_contains_itself_is_refused(info):
    from inkwash.webui.ui_workflow import UIWorkflowError

    loop = {"nodes": [node(-1, "workflow>loop", outputs=[("LATENT", "LATENT")])], "links": [], "external": []}
    ui = graph([node(5, "workflow>loop", outputs=[("LATENT", "LATENT")])], [], extra={"groupNodes": {"loop": loop}})
    with pytest.raises(UIWorkflowError, match="nest more than 32 deep"):
        ui_to_api(ui, info)


def test_visual_groups_are_only_boxes(info):
    twin = txt2img_twin()
    boxed = {**twin, "groups": [{"title": "Prompts", "bounding": [0, 0, 400, 300], "color": "#3f789e",
                                 "font_size": 24, "flags": {}}]}
    assert ui_to_api(boxed, info) == ui_to_api(twin, info)
    assert set(ui_to_api(boxed, info)) == {"3", "4", "5", "6", "7", "8", "9"}


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
