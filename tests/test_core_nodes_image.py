"""ComfyUI's image and mask nodes: crop, invert, batch, blend, composite, outpaint padding, masks."""
import numpy as np
import pytest
import scipy.ndimage
import torch

from inkwash.nodes.core import image_ops, masks
from inkwash.nodes.executor import Executor

N = {**image_ops.NODES, **masks.NODES}


def run(name, **inputs):
    return N[name]().run(**inputs)


def solid_image(value, batch=1, height=8, width=8, channels=3):
    return torch.full((batch, height, width, channels), float(value))


# -- images -----------------------------------------------------------------------------------------------

def test_image_crop_keeps_the_corner_inside():
    image = torch.rand(2, 10, 12, 3)
    (out,) = run("ImageCrop", image=image, width=4, height=3, x=5, y=2)
    assert torch.equal(out, image[:, 2:5, 5:9])
    (edge,) = run("ImageCrop", image=image, width=512, height=512, x=100, y=100)
    assert torch.equal(edge, image[:, 9:, 11:])  # x, y clamped to the last pixel; the crop comes out 1x1


def test_image_invert_keeps_alpha():
    rgba = torch.rand(1, 4, 4, 4)
    (out,) = run("ImageInvert", image=rgba)
    assert torch.allclose(out[..., :3], 1 - rgba[..., :3]) and torch.equal(out[..., 3], rgba[..., 3])


def test_image_batch_resizes_second_and_adds_alpha():
    first, second = solid_image(0.2, batch=2), solid_image(0.8, height=16, width=4)
    (out,) = run("ImageBatch", image1=first, image2=second)
    assert out.shape == (3, 8, 8, 3) and torch.allclose(out[2], torch.full((8, 8, 3), 0.8))
    (mixed,) = run("ImageBatch", image1=first, image2=solid_image(0.5, channels=4))
    assert mixed.shape == (3, 8, 8, 4) and mixed[:2, ..., 3].eq(1).all()  # RGB got an opaque alpha


@pytest.mark.parametrize("mode, expected", [
    ("normal", 0.8), ("multiply", 0.2 * 0.8), ("screen", 1 - 0.8 * 0.2), ("overlay", 2 * 0.2 * 0.8),
    ("difference", 0.0),  # 0.2 - 0.8 clamps to 0
])
def test_image_blend_modes(mode, expected):
    (out,) = run("ImageBlend", image1=solid_image(0.2), image2=solid_image(0.8), blend_factor=1.0, blend_mode=mode)
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-6)


def test_image_blend_factor_soft_light_and_resizing():
    (half,) = run("ImageBlend", image1=solid_image(0.2), image2=solid_image(0.8), blend_factor=0.5,
                  blend_mode="normal")
    assert torch.allclose(half, torch.full_like(half, 0.5))
    (soft,) = run("ImageBlend", image1=solid_image(0.49), image2=solid_image(0.25), blend_factor=1.0,
                  blend_mode="soft_light")
    assert soft[0, 0, 0, 0] == pytest.approx(0.49 - 0.5 * 0.49 * 0.51, abs=1e-6)
    (resized,) = run("ImageBlend", image1=solid_image(0.2), image2=solid_image(0.8, height=4, width=16),
                     blend_factor=1.0, blend_mode="normal")
    assert resized.shape == (1, 8, 8, 3) and torch.allclose(resized, torch.full_like(resized, 0.8))
    with pytest.raises(ValueError, match="blend_mode"):
        run("ImageBlend", image1=solid_image(0.2), image2=solid_image(0.8), blend_factor=1.0, blend_mode="burn")


def test_image_composite_masked_pastes_through_the_mask():
    destination, source = solid_image(0.0, batch=2), solid_image(1.0, height=4, width=4)
    mask = torch.zeros(1, 4, 4)
    mask[:, :, 2:] = 1
    (out,) = run("ImageCompositeMasked", destination=destination, source=source, x=3, y=1, resize_source=False,
                 mask=mask)
    assert out.shape == (2, 8, 8, 3)
    assert out[:, 1:5, 5:7].eq(1).all()  # mask 1
    assert out[:, 1:5, 3:5].eq(0).all()  # mask 0 keeps the destination
    (clipped,) = run("ImageCompositeMasked", destination=destination, source=source, x=6, y=6, resize_source=False)
    assert clipped[:, 6:, 6:].eq(1).all() and clipped.sum() == 2 * 2 * 2 * 3
    (whole,) = run("ImageCompositeMasked", destination=destination, source=source, x=0, y=0, resize_source=True)
    assert whole.eq(1).all()


def test_image_pad_for_outpaint_canvas_and_feathered_mask():
    image = torch.rand(1, 40, 40, 3)
    canvas, mask = run("ImagePadForOutpaint", image=image, left=8, top=0, right=0, bottom=16, feathering=10)
    assert canvas.shape == (1, 56, 48, 3) and mask.shape == (1, 56, 48)
    assert torch.equal(canvas[:, :40, 8:], image) and canvas[:, :, :8].eq(0.5).all() and canvas[:, 40:].eq(0.5).all()
    assert mask[0, :, :8].eq(1).all() and mask[0, 40:].eq(1).all()
    # inside the image: (feathering - d) / feathering squared near padded sides, 0 further in
    assert mask[0, 20, 8] == pytest.approx(1.0)  # on the left edge: d = 0
    assert mask[0, 20, 8 + 5] == pytest.approx(0.25)  # d = 5
    assert mask[0, 20, 8 + 10] == 0 and mask[0, 0, 30] == 0  # top was not padded: no feather there
    _, unfeathered = run("ImagePadForOutpaint", image=image, left=8, top=0, right=0, bottom=0, feathering=0)
    assert unfeathered[0, :, 8:].eq(0).all()


# -- masks ------------------------------------------------------------------------------------------------

def test_image_to_mask_and_back():
    image = torch.rand(2, 4, 5, 4)
    (green,) = run("ImageToMask", image=image, channel="green")
    assert torch.equal(green, image[..., 1]) and green.shape == (2, 4, 5)
    (alpha,) = run("ImageToMask", image=image, channel="alpha")
    assert torch.equal(alpha, image[..., 3])
    with pytest.raises(ValueError, match="no alpha channel"):
        run("ImageToMask", image=image[..., :3], channel="alpha")
    (grey,) = run("MaskToImage", mask=green[0])  # a single [H,W] mask too
    assert grey.shape == (1, 4, 5, 3) and torch.equal(grey[0, ..., 2], green[0])


def test_solid_invert_crop_mask():
    (solid,) = run("SolidMask", value=0.25, width=6, height=4)
    assert solid.shape == (1, 4, 6) and solid.eq(0.25).all()
    (inverted,) = run("InvertMask", mask=solid)
    assert inverted.eq(0.75).all()
    mask = torch.rand(2, 10, 10)
    (cropped,) = run("CropMask", mask=mask, x=2, y=3, width=4, height=100)
    assert torch.equal(cropped, mask[:, 3:, 2:6])


def test_feather_mask_fades_each_side():
    (out,) = run("FeatherMask", mask=torch.ones(1, 6, 8), left=4, top=0, right=2, bottom=3)
    assert out[0, 0, :4].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert out[0, 0, -2:].tolist() == pytest.approx([1.0, 0.5])
    assert out[0, -3:, 5].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    (unchanged,) = run("FeatherMask", mask=torch.ones(1, 6, 8), left=0, top=0, right=0, bottom=0)
    assert unchanged.eq(1).all()


@pytest.mark.parametrize("expand, tapered", [(2, True), (2, False), (-1, True), (-2, False), (0, True)])
def test_grow_mask_matches_scipy_grey_morphology(expand, tapered):
    torch.manual_seed(0)
    mask = (torch.rand(2, 12, 10) > 0.7).float() * torch.rand(2, 12, 10)
    (out,) = run("GrowMask", mask=mask, expand=expand, tapered_corners=tapered)
    c = 0 if tapered else 1
    footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    for index in range(2):
        expected = mask[index].numpy()
        for _ in range(abs(expand)):
            op = scipy.ndimage.grey_dilation if expand > 0 else scipy.ndimage.grey_erosion
            expected = op(expected, footprint=footprint)
        assert np.allclose(out[index].numpy(), expected)


def test_image_and_mask_nodes_run_in_a_graph(registry, folders):
    from PIL import Image

    Image.new("RGBA", (16, 16), (255, 0, 0, 128)).save(folders.input_dir / "red.png")
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
        "2": {"class_type": "ImagePadForOutpaint", "inputs": {"image": ["1", 0], "left": 8, "top": 0, "right": 0,
                                                              "bottom": 0, "feathering": 0}},
        "3": {"class_type": "GrowMask", "inputs": {"mask": ["2", 1], "expand": 1, "tapered_corners": True}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "ImageBlend", "inputs": {"image1": ["2", 0], "image2": ["4", 0], "blend_factor": 0.5,
                                                     "blend_mode": "multiply"}},
        "6": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "pad"}},
    }
    result = Executor(registry).execute(workflow)
    saved = Image.open(folders.output_dir / result.outputs["7"]["images"][0]["filename"]).convert("RGB")
    assert saved.size == (24, 16)
    # left border: grey 0.5 half-blended with 0.5 * 1 (multiply by mask 1) stays 0.5; inverted 0.5
    assert saved.getpixel((0, 8)) == (128, 128, 128)
    # inside, a column past the grown mask: red * (1 - 0.5) inverted = (0.5, 1, 1)
    assert saved.getpixel((20, 8)) == (128, 255, 255)


def test_bad_values_are_validation_errors_naming_the_input(registry):
    workflow = {"1": {"class_type": "SolidMask", "inputs": {"value": 2.0, "width": 8, "height": 8}},
                "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
                "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    validation = Executor(registry).validate(workflow)
    (error,) = validation.node_errors["1"]["errors"]
    assert error["type"] == "value_bigger_than_max" and error["extra_info"]["input_name"] == "value"
