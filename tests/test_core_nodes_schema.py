"""/object_info of the core nodes added for shared workflows: ComfyUI's input names, order, types,
defaults and bounds, and output order, as ComfyUI's nodes.py and comfy_extras declare them."""
import pytest

from inkwash.nodes.registry import object_info

MAX = 16384
LATENT_XY = {"default": 0, "min": 0, "max": MAX, "step": 8}
PIXEL_XY = {"default": 0, "min": 0, "max": MAX, "step": 1}
SIZE = {"default": 512, "min": 1, "max": MAX, "step": 1}
RATIO = {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}

# name: (required inputs [(name, type or choices, options)], optional input names, output types)
EXPECTED = {
    "ControlNetApply": ([("conditioning", "CONDITIONING", {}), ("control_net", "CONTROL_NET", {}),
                         ("image", "IMAGE", {}),
                         ("strength", "FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})],
                        [], ["CONDITIONING"]),
    "DiffControlNetLoader": ([("model", "MODEL", {}), ("control_net_name", list, {})], [], ["CONTROL_NET"]),
    "ConditioningZeroOut": ([("conditioning", "CONDITIONING", {})], [], ["CONDITIONING"]),
    "ConditioningCombine": ([("conditioning_1", "CONDITIONING", {}), ("conditioning_2", "CONDITIONING", {})], [],
                            ["CONDITIONING"]),
    "ConditioningConcat": ([("conditioning_to", "CONDITIONING", {}), ("conditioning_from", "CONDITIONING", {})], [],
                           ["CONDITIONING"]),
    "ConditioningAverage": ([("conditioning_to", "CONDITIONING", {}), ("conditioning_from", "CONDITIONING", {}),
                             ("conditioning_to_strength", "FLOAT", RATIO)], [], ["CONDITIONING"]),
    "ImagePadForOutpaint": ([("image", "IMAGE", {})]
                            + [(side, "INT", LATENT_XY) for side in ("left", "top", "right", "bottom")]
                            + [("feathering", "INT", {"default": 40, "min": 0, "max": MAX, "step": 1})],
                            [], ["IMAGE", "MASK"]),
    "LatentComposite": ([("samples_to", "LATENT", {}), ("samples_from", "LATENT", {}), ("x", "INT", LATENT_XY),
                         ("y", "INT", LATENT_XY), ("feather", "INT", LATENT_XY)], [], ["LATENT"]),
    "LatentCompositeMasked": ([("destination", "LATENT", {}), ("source", "LATENT", {}), ("x", "INT", LATENT_XY),
                               ("y", "INT", LATENT_XY), ("resize_source", "BOOLEAN", {"default": False})],
                              ["mask"], ["LATENT"]),
    "LatentBlend": ([("samples1", "LATENT", {}), ("samples2", "LATENT", {}),
                     ("blend_factor", "FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})],
                    [], ["LATENT"]),
    "LatentFromBatch": ([("samples", "LATENT", {}), ("batch_index", "INT", {"default": 0, "min": -MAX, "max": MAX}),
                         ("length", "INT", {"default": 1, "min": 1, "max": 64})], [], ["LATENT"]),
    "RepeatLatentBatch": ([("samples", "LATENT", {}), ("amount", "INT", {"default": 1, "min": 1, "max": 64})], [],
                          ["LATENT"]),
    "LatentCrop": ([("samples", "LATENT", {}), ("width", "INT", {"default": 512, "min": 64, "max": MAX, "step": 8}),
                    ("height", "INT", {"default": 512, "min": 64, "max": MAX, "step": 8}), ("x", "INT", LATENT_XY),
                    ("y", "INT", LATENT_XY)], [], ["LATENT"]),
    "LatentFlip": ([("samples", "LATENT", {}), ("flip_method", ["x-axis: vertically", "y-axis: horizontally"], {})],
                   [], ["LATENT"]),
    "LatentRotate": ([("samples", "LATENT", {}),
                      ("rotation", ["none", "90 degrees", "180 degrees", "270 degrees"], {})], [], ["LATENT"]),
    "ImageCrop": ([("image", "IMAGE", {}), ("width", "INT", SIZE), ("height", "INT", SIZE), ("x", "INT", PIXEL_XY),
                   ("y", "INT", PIXEL_XY)], [], ["IMAGE"]),
    "ImageInvert": ([("image", "IMAGE", {})], [], ["IMAGE"]),
    "ImageBatch": ([("image1", "IMAGE", {}), ("image2", "IMAGE", {})], [], ["IMAGE"]),
    "ImageBlend": ([("image1", "IMAGE", {}), ("image2", "IMAGE", {}),
                    ("blend_factor", "FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                    ("blend_mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"], {})],
                   [], ["IMAGE"]),
    "ImageCompositeMasked": ([("destination", "IMAGE", {}), ("source", "IMAGE", {}), ("x", "INT", PIXEL_XY),
                              ("y", "INT", PIXEL_XY), ("resize_source", "BOOLEAN", {"default": False})],
                             ["mask"], ["IMAGE"]),
    "ImageToMask": ([("image", "IMAGE", {}), ("channel", ["red", "green", "blue", "alpha"], {})], [], ["MASK"]),
    "MaskToImage": ([("mask", "MASK", {})], [], ["IMAGE"]),
    "SolidMask": ([("value", "FLOAT", RATIO), ("width", "INT", SIZE), ("height", "INT", SIZE)], [], ["MASK"]),
    "InvertMask": ([("mask", "MASK", {})], [], ["MASK"]),
    "GrowMask": ([("mask", "MASK", {}), ("expand", "INT", {"default": 0, "min": -MAX, "max": MAX, "step": 1}),
                  ("tapered_corners", "BOOLEAN", {"default": True})], [], ["MASK"]),
    "FeatherMask": ([("mask", "MASK", {})] + [(side, "INT", PIXEL_XY) for side in ("left", "top", "right", "bottom")],
                    [], ["MASK"]),
    "CropMask": ([("mask", "MASK", {}), ("x", "INT", PIXEL_XY), ("y", "INT", PIXEL_XY), ("width", "INT", SIZE),
                  ("height", "INT", SIZE)], [], ["MASK"]),
    "SaveLatent": ([("samples", "LATENT", {}), ("filename_prefix", "STRING", {"default": "latents/ComfyUI"})], [], []),
    "LoadLatent": ([("latent", list, {})], [], ["LATENT"]),
    "ModelMergeSimple": ([("model1", "MODEL", {}), ("model2", "MODEL", {}), ("ratio", "FLOAT", RATIO)], [], ["MODEL"]),
    "CLIPMergeSimple": ([("clip1", "CLIP", {}), ("clip2", "CLIP", {}), ("ratio", "FLOAT", RATIO)], [], ["CLIP"]),
    "HypernetworkLoader": ([("model", "MODEL", {}), ("hypernetwork_name", list, {}),
                            ("strength", "FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})],
                           [], ["MODEL"]),
}


@pytest.fixture(scope="module")
def info(registry):
    return object_info(registry)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_object_info_matches_comfyui(info, name):
    required, optional, outputs = EXPECTED[name]
    entry = info[name]
    assert entry["input_order"]["required"] == [n for n, _, _ in required]
    assert entry["input_order"].get("optional", []) == optional
    for input_name, kind, options in required:
        declared_type, declared = entry["input"]["required"][input_name]
        if kind is list:
            assert isinstance(declared_type, list)  # a file list
        else:
            assert declared_type == kind, input_name
        assert {k: v for k, v in declared.items() if k != "tooltip"} == options, input_name
    assert entry["output"] == outputs
    assert entry["name"] == name and entry["display_name"]


def test_save_latent_is_an_output_node(info):
    assert info["SaveLatent"]["output_node"] is True
    assert info["SaveLatent"]["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def test_the_graph_editor_lays_out_the_new_nodes_with_their_widgets(info):
    from inkwash.webui.graph_layout import api_to_ui

    workflow = {
        "1": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 64, "height": 64}},
        "2": {"class_type": "GrowMask", "inputs": {"mask": ["1", 0], "expand": 3, "tapered_corners": False}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "ImageCompositeMasked", "inputs": {"destination": ["3", 0], "source": ["3", 0],
                                                               "x": 8, "y": 0, "resize_source": True,
                                                               "mask": ["2", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    ui = api_to_ui(workflow, info)
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert nodes["2"]["widgets_values"] == [3, False]
    assert nodes["4"]["widgets_values"] == [8, 0, True]
    assert [slot["name"] for slot in nodes["4"]["inputs"]] == ["destination", "source", "mask"]
    assert len(ui["links"]) == 6  # 1-2, 2-3, 3-4 twice, 2-4, 4-5
