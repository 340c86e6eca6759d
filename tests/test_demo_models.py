"""The bundled demo models meet their targets, measured as demo/evaluate.py measures them (through the
workflows in workflows/) on a small fixed sample. `python -m inkwash.demo.evaluate` measures the same
on more prompts, and also times a generation, which tests never assert on."""
import pytest

from inkwash.demo import evaluate
from inkwash.nodes import folders as folders_module

MODELS = evaluate.REPO / "models"


def needs(*files: str):
    """Only while part of the trained family is not committed yet; once all of it is, drop these skips,
    so that missing or broken demo models fail the suite."""
    missing = [f for f in files if not (MODELS / f).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"demo model not trained yet: {', '.join(missing)}")


CHECKPOINT = needs(f"checkpoints/{evaluate.CHECKPOINT}")
CANNY = needs(f"checkpoints/{evaluate.CHECKPOINT}", "controlnet/inkwash-demo-canny.safetensors")
DEPTH = needs("annotators/inkwash-demo-depth.safetensors")
DEPTH2IMG = needs(f"checkpoints/{evaluate.CHECKPOINT}", "controlnet/inkwash-demo-depth.safetensors",
                  "annotators/inkwash-demo-depth.safetensors")

PROMPTS = 16  # txt2img prompts: every held-out colour and shape, 7 of the 8 backgrounds
INPUTS = 8    # input images for img2img, inpaint and the ControlNets


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    previous = folders_module.current()
    yield evaluate.Studio(MODELS, tmp_path_factory.mktemp("evaluate"))
    folders_module._current = previous


@pytest.fixture(scope="module")
def txt2img_cfg5(studio):
    return evaluate.txt2img(studio, evaluate.prompt_scenes(PROMPTS))


@CHECKPOINT
def test_txt2img_draws_held_out_combinations(txt2img_cfg5):
    assert txt2img_cfg5.passed, txt2img_cfg5.summary()


@CHECKPOINT
def test_cfg_5_follows_the_prompt_better_than_cfg_1(studio, txt2img_cfg5):
    cfg1 = evaluate.txt2img(studio, evaluate.prompt_scenes(PROMPTS), cfg=1.0)
    result = evaluate.cfg_effect(cfg1, txt2img_cfg5)
    assert result.passed, result.summary()


@CHECKPOINT
def test_img2img_keeps_the_layout_at_low_denoise_and_follows_the_prompt_at_high(studio):
    result = evaluate.img2img(studio, evaluate.input_scenes(INPUTS))
    assert result.passed, result.summary()


@CHECKPOINT
def test_inpaint_paints_the_masked_corner_and_keeps_the_rest(studio):
    result = evaluate.inpaint(studio, evaluate.inpaint_scenes(INPUTS))
    assert result.passed, result.summary()


@CANNY
def test_canny_controlnet_follows_the_control_edges(studio):
    result = evaluate.canny(studio, evaluate.input_scenes(INPUTS))
    assert result.passed, result.summary()


@DEPTH
def test_bundled_depth_estimator_matches_true_depth(studio):
    result = evaluate.depth(studio, evaluate.input_scenes(PROMPTS))
    assert result.passed, result.summary()


@DEPTH2IMG
def test_depth2img_keeps_the_depth_layout(studio):
    result = evaluate.depth2img(studio, evaluate.input_scenes(INPUTS))
    assert result.passed, result.summary()
