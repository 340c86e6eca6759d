"""Canny and MiDaS depth preprocessor nodes, offline."""
import numpy as np
import pytest
import torch

from inkwash.nodes.core import preprocessors
from inkwash.nodes.runtime import annotators

Canny = preprocessors.NODES["Canny"]
Midas = preprocessors.NODES["MiDaS-DepthMapPreprocessor"]


def _square(height, width):
    image = torch.zeros(1, height, width, 3)
    image[:, height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1.0
    return image


@pytest.mark.parametrize("height,width", [(64, 128), (72, 100)])
def test_canny_finds_the_edges_of_a_square(height, width):
    (edges,) = Canny().run(image=_square(height, width), low_threshold=0.4, high_threshold=0.8)
    assert edges.shape == (1, height, width, 3)  # the input's own size, also off multiples of 64
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(edges[..., 0], edges[..., 2])
    rows = edges[0, :, :, 0].sum(dim=1)
    assert rows[height // 4] > 0 and rows[height // 2] > 0  # top edge and both sides
    assert rows[: height // 4 - 2].sum() == 0 and edges[0, height // 2, width // 2, 0] == 0  # flat areas are black


def test_canny_thresholds_matter():
    image = _square(64, 64) * 0.05  # a faint square: found with low thresholds only
    (low,) = Canny().run(image=image, low_threshold=0.05, high_threshold=0.1)
    (high,) = Canny().run(image=image, low_threshold=0.4, high_threshold=0.8)
    assert low.sum() > 0 and high.sum() == 0


def test_midas_declaration_matches_comfyui_controlnet_aux():
    info = Midas.object_info("MiDaS-DepthMapPreprocessor")
    assert list(info["input"]["required"]) == ["image"]
    optional = info["input"]["optional"]
    assert optional["a"][1]["default"] == pytest.approx(6.283185307179586)
    assert optional["bg_threshold"][1]["default"] == 0.1
    assert optional["resolution"] == ["INT", {"default": 512, "min": 64, "max": 16384, "step": 64}]
    assert info["output"] == ["IMAGE"]


def test_midas_without_weights_names_file_and_folder(folders):
    with pytest.raises(annotators.AnnotatorWeightsMissing) as error:
        Midas().run(image=torch.rand(1, 32, 32, 3))
    message = str(error.value)
    assert "dpt_hybrid-midas-501f0c75.pt" in message
    assert str(folders.models_dir / "annotators") in message


def test_depth_seam_output_size_and_reload_on_change(folders, monkeypatch):
    weights = folders.models_dir / "annotators" / "lllyasviel" / "Annotators" / annotators.MIDAS_FILE
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"v1")
    loads = []

    def fake_loader(path):
        loads.append(path.read_bytes())

        def estimate(image, resolution, **options):
            assert options == {"a": 1.0, "bg_threshold": 0.5}
            return np.full((resolution, resolution), 200, np.uint8)  # deliberately square
        return estimate

    candidates, what, _ = annotators.DEPTH_ESTIMATORS["midas_dpt_hybrid"]
    monkeypatch.setitem(annotators.DEPTH_ESTIMATORS, "midas_dpt_hybrid", (candidates, what, fake_loader))
    monkeypatch.setattr(annotators, "_loaded", {})
    (depth,) = Midas().run(image=torch.rand(2, 60, 90, 3), a=1.0, bg_threshold=0.5, resolution=128)
    assert depth.shape == (2, 128, 192, 3)  # shorter side = resolution, aspect kept
    assert torch.allclose(depth, torch.full_like(depth, 200 / 255))
    Midas().run(image=torch.rand(1, 8, 8, 3), a=1.0, bg_threshold=0.5, resolution=64)
    assert loads == [b"v1"]  # loaded once
    weights.write_bytes(b"v2-changed")
    Midas().run(image=torch.rand(1, 8, 8, 3), a=1.0, bg_threshold=0.5, resolution=64)
    assert loads == [b"v1", b"v2-changed"]


@pytest.mark.slow
def test_midas_with_random_dpt_hybrid_weights(folders, monkeypatch):
    # Full-size DPT-Hybrid (123M parameters, ~490 MB file) with random weights: the real loading path.
    annotators._controlnet_aux()
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    torch.manual_seed(0)
    net = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    folder = folders.models_dir / "annotators"
    folder.mkdir(parents=True)
    torch.save(net.state_dict(), folder / annotators.MIDAS_FILE)
    del net
    monkeypatch.setattr(annotators, "_loaded", {})

    (depth,) = Midas().run(image=torch.rand(1, 96, 128, 3), resolution=128)
    assert depth.shape == (1, 128, 171, 3)
    assert depth.min() >= 0 and depth.max() <= 1 and depth.max() > depth.min()
    assert torch.equal(depth[..., 0], depth[..., 1])
