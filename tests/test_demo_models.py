"""The bundled demo models meet their targets, measured as demo/evaluate.py measures them (through the
workflows in workflows/) on a small fixed sample. `python -m inkwash.demo.evaluate` measures the same
on more prompts, and also times a generation, which tests never assert on."""
import pytest

from inkwash.demo import evaluate
from inkwash.nodes import folders as folders_module

MODELS = evaluate.REPO / "models"


# Targets the committed demo models do not meet yet (check names as demo/evaluate.py words them). They
# are still measured: a test whose only unmet checks are listed here is an expected failure; one that
# meets a listed check fails, so that the check leaves this list as soon as a re-trained model meets it.
KNOWN_GAPS = {
    "denoise 0.3: background, colour and position of the input kept",
}


def assert_targets(result: evaluate.Measurement) -> None:
    assert result.error is None, result.summary()
    unexpected = [c.what for c in result.checks if not c.passed and c.what not in KNOWN_GAPS]
    assert not unexpected, result.summary()
    met = [c.what for c in result.checks if c.passed and c.what in KNOWN_GAPS]
    assert not met, f"now met, take them out of KNOWN_GAPS: {met}\n{result.summary()}"
    if not result.passed:
        pytest.xfail("known gaps of the demo models: " + "; ".join(c.line() for c in result.checks if not c.passed))


# txt2img prompts: the evaluation's own 48, each held-out (colour, shape, background) triple three times.
# One prompt per triple (16) left shape right (11 of 16, against 36 of the 48) to the luck of one image.
PROMPTS = 48
INPUTS = 8    # input images for img2img, inpaint and the ControlNets


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    previous = folders_module.current()
    yield evaluate.Studio(MODELS, tmp_path_factory.mktemp("evaluate"))
    folders_module._current = previous


@pytest.fixture(scope="module")
def txt2img_cfg5(studio):
    return evaluate.txt2img(studio, evaluate.prompt_scenes(PROMPTS))


def test_txt2img_draws_held_out_combinations(txt2img_cfg5):
    assert_targets(txt2img_cfg5)


def test_cfg_5_follows_the_prompt_better_than_cfg_1(studio, txt2img_cfg5):
    cfg1 = evaluate.txt2img(studio, evaluate.prompt_scenes(PROMPTS), cfg=1.0)
    result = evaluate.cfg_effect(cfg1, txt2img_cfg5)
    assert_targets(result)


def test_img2img_keeps_the_layout_at_low_denoise_and_follows_the_prompt_at_high(studio):
    result = evaluate.img2img(studio, evaluate.input_scenes(INPUTS))
    assert_targets(result)


def test_inpaint_paints_the_masked_corner_and_keeps_the_rest(studio):
    result = evaluate.inpaint(studio, evaluate.inpaint_scenes(INPUTS))
    assert_targets(result)


def test_canny_controlnet_follows_the_control_edges(studio):
    result = evaluate.canny(studio, evaluate.input_scenes(INPUTS))
    assert_targets(result)


def test_bundled_depth_estimator_matches_true_depth(studio):
    result = evaluate.depth(studio, evaluate.input_scenes(PROMPTS))
    assert_targets(result)


def test_depth2img_keeps_the_depth_layout(studio):
    result = evaluate.depth2img(studio, evaluate.input_scenes(INPUTS))
    assert_targets(result)
