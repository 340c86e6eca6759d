"""The demo family's training pipeline, run for a couple of steps per stage on a tiny world dataset.

The architectures are the real ones (they are small); only the data, batch and step counts shrink.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from inkwash.demo import train, train_common, train_data, train_models, train_samples, train_unet, train_vae, world
from inkwash.demo.train_assemble import CHECKPOINT, CONTROLNETS
from inkwash.demo.train_unet import Diffusion, FirstStep, held_targets
from inkwash.nodes.runtime import annotators
from inkwash.nodes.runtime.checkpoint_load import load_checkpoint, load_controlnet
from inkwash.nodes.runtime.model_types import TextEncoder
from inkwash.nodes.runtime.text_encode import encode
from inkwash.nodes.runtime.tokenizers import clip_tokenizer
from safetensors import safe_open

TINY = ["--images", "12", "--steps", "2", "--batch", "2"]


def _args(tmp_path, *extra):
    return ["--out", str(tmp_path / "build"), "--models", str(tmp_path / "models"), *TINY, *extra]


def _loss_steps(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


@pytest.fixture(autouse=True)
def _few_sampling_steps(monkeypatch):
    monkeypatch.setattr(train_samples, "STEPS", 2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every stage, two steps each, into one folder."""
    tmp = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_samples, "STEPS", 2)
        assert train.main(_args(tmp)) == 0
    return tmp


def test_every_stage_finishes_with_its_outputs(trained):
    build = trained / "build"
    for name in train.STAGES:
        assert (build / name / "done.json").is_file(), name
    for name in ("vae", "vae_decoder", "unet", "unet_layout", "unet_corners", "controlnet_canny", "controlnet_depth",
                 "depth"):
        assert _loss_steps(build / name / "loss.csv") == [1, 2]
        assert list((build / name).glob("samples_*.png")), name
    assert np.load(build / "latents.npy").shape == (12, 4, 16, 16)
    assert json.loads((build / "vae" / "done.json").read_text())["scaling_factor"] > 0


def test_assembled_files_load_and_generate(trained):
    models = trained / "models"
    model, clip, vae = load_checkpoint(models / CHECKPOINT, device="cpu", dtype=torch.float32)
    assert model.family.name == "sd1" and model.family.prediction_type == "epsilon"
    control_net = load_controlnet(models / CONTROLNETS["controlnet_canny"], device="cpu", dtype=torch.float32)
    hint = torch.zeros(1, 128, 128, 3)
    hint[:, 40:80, 40:80] = 1.0
    image = train_samples.txt2img(model, clip, vae, ["a red circle on a blue background"], control_net=control_net,
                                  hints=hint)
    assert image.shape == (1, 128, 128, 3) and torch.isfinite(image).all()
    with safe_open(str(models / CHECKPOINT), "pt") as f:  # stored in half precision
        assert f.get_slice("model.diffusion_model.input_blocks.0.0.weight").get_dtype() == "F16"
    assert json.loads((trained / "build" / "assemble" / "done.json").read_text())["total_mb"] <= 50


@pytest.mark.parametrize("name", [train_unet.LAYOUT, train_unet.CORNERS])
def test_fine_tune_stages_start_from_the_previous_result(trained, name):
    """unet_layout starts from the unet stage's weights, unet_corners from unet_layout's: two small
    steps move them a little, far less than the distance to a freshly initialised UNet."""
    settings = train.parse_args(_args(trained))[1]
    base, _ = train_unet.load(settings, train_unet.RECIPES[name].start_from)
    tuned, _ = train_unet.load(settings, name)
    fresh = train_models.unet()

    def distance(a, b):
        return sum((p - q).square().sum() for p, q in zip(a.parameters(), b.parameters())).sqrt().item()

    moved = distance(base, tuned)
    assert 0 < moved < 0.05 * distance(base, fresh)


def test_decoder_stage_keeps_the_encoder_and_its_latents(trained):
    """vae_decoder trains the decoder only: the encoder, which made the cached latents the UNet
    learns, is the vae stage's to the bit."""
    settings = train.parse_args(_args(trained))[1]
    first, tuned = train_vae.load(settings, train_vae.NAME), train_vae.load(settings)
    for part in ("encoder", "quant_conv"):
        for (key, a), b in zip(getattr(first, part).state_dict().items(), getattr(tuned, part).state_dict().values()):
            assert torch.equal(a, b), f"{part}.{key}"
    assert any(not torch.equal(a, b) for a, b in zip(first.decoder.parameters(), tuned.decoder.parameters()))
    assert tuned.config.scaling_factor == first.config.scaling_factor


def test_reconstruction_loss_weighs_the_border_and_the_edges():
    pixels = torch.zeros(1, 3, 32, 32)
    pixels[..., 8:24, 8:24] = 1.0  # an object
    depths = np.zeros((1, 32, 32))
    wrong_border = pixels.clone()
    wrong_border[..., 0, :] = 0.2  # a frame line, as zero padding leaves it
    plain = train_vae.reconstruction_loss(wrong_border, pixels, depths)
    assert train_vae.reconstruction_loss(wrong_border, pixels, depths, border_weight=10.0) > 3 * plain
    assert train_vae.reconstruction_loss(pixels, pixels, depths, edge_weight=1.0, border_weight=10.0) == 0
    # a blurred outline (a half-tone column each side) and a half-tone patch of the same size inside
    # the object cost the same pixel loss; the edge term tells the blur apart
    blurred, flat = pixels.clone(), pixels.clone()
    blurred[..., 8:24, 7] = 0.5
    blurred[..., 8:24, 24] = 0.5
    flat[..., 8:24, 8:10] = 0.5
    assert torch.isclose(train_vae.reconstruction_loss(blurred, pixels, depths),
                         train_vae.reconstruction_loss(flat, pixels, depths))
    assert (train_vae.reconstruction_loss(blurred, pixels, depths, edge_weight=1.0)
            > train_vae.reconstruction_loss(flat, pixels, depths, edge_weight=1.0))


def test_finished_stages_are_skipped(trained, capsys):
    checkpoint = trained / "build" / "vae" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    assert train.main(_args(trained, "--stage", "vae")) == 0
    assert checkpoint.stat().st_mtime_ns == before
    assert "already done" in capsys.readouterr().out


def test_a_stage_needs_its_inputs(tmp_path):
    assert train.main(_args(tmp_path, "--stage", "unet")) == 2


def test_resumed_training_continues_where_it_stopped(tmp_path):
    """Paused after 2 of 4 steps and run again: the step counter and loss curve continue, and the
    weights are those of an uninterrupted run (data order and noise resume too)."""
    interrupted = _args(tmp_path / "a", "--stage", "depth", "--steps", "4")
    assert train.main(interrupted + ["--stop-after", "2"]) == 0
    stage = tmp_path / "a" / "build" / "depth"
    assert not (stage / "done.json").exists()
    assert torch.load(stage / "checkpoint.pt", weights_only=True)["step"] == 2
    assert _loss_steps(stage / "loss.csv") == [1, 2]

    assert train.main(interrupted) == 0
    assert (stage / "done.json").is_file()
    assert _loss_steps(stage / "loss.csv") == [1, 2, 3, 4]

    assert train.main(_args(tmp_path / "b", "--stage", "depth", "--steps", "4")) == 0
    resumed = torch.load(stage / "checkpoint.pt", weights_only=True)["modules"]["depth"]
    straight = torch.load(tmp_path / "b" / "build" / "depth" / "checkpoint.pt", weights_only=True)["modules"]["depth"]
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, msg=key)


def test_restart_starts_a_stage_over(tmp_path):
    args = _args(tmp_path, "--stage", "depth")
    assert train.main(args) == 0
    assert train.main(args + ["--restart"]) == 0
    assert _loss_steps(tmp_path / "build" / "depth" / "loss.csv") == [1, 2]


def test_corner_pairs_are_the_two_object_scenes_with_one_in_a_corner():
    """The selection read off the canonical captions matches the scenes themselves."""
    CORNERS = {"top left", "top right", "bottom left", "bottom right"}
    rng = np.random.default_rng(3)
    scenes = [world.random_scene(rng) for _ in range(300)]
    captions = [[world.caption(s, rng), world.prompt_for(s)] for s in scenes]
    data = train_data.WorldData(np.zeros((300, 1, 1, 3), np.uint8), np.zeros((300, 1, 1), np.float16),
                                np.zeros((300, 2, 77), np.int32), captions)
    expected = [i for i, s in enumerate(scenes)
                if len(s.objects) == 2 and any(o.position in CORNERS for o in s.objects)]
    assert 30 < len(expected) < 270  # both kinds are there
    assert train_data.two_objects_one_in_a_corner(data).tolist() == expected


def test_training_embeds_prompts_as_inference_does():
    torch.manual_seed(0)
    text_encoder = train_models.text_encoder().eval()
    clip = TextEncoder([clip_tokenizer()], [text_encoder], train_samples.family())
    prompts = ["a small red star in the top left corner on a blue background", train_data.EMPTY_PROMPT]
    with torch.no_grad():
        trained_embeds = train_data.embed(text_encoder, torch.from_numpy(train_data.tokenize(prompts)))
    for prompt, embeds in zip(prompts, trained_embeds):
        torch.testing.assert_close(encode(clip, prompt)[0].embeds[0], embeds)


def test_depth_node_falls_back_to_the_bundled_estimator(trained, folders):
    from inkwash.nodes.core.preprocessors import MidasDepthMapPreprocessor
    from inkwash.nodes.runtime import demo_depth

    node = MidasDepthMapPreprocessor()
    with pytest.raises(annotators.AnnotatorWeightsMissing, match="inkwash-demo-depth.safetensors"):
        node.run(torch.rand(1, 64, 64, 3), resolution=64)  # neither MiDaS nor the bundled one installed
    target = folders.models_dir / "annotators" / demo_depth.WEIGHTS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((trained / "models" / "annotators" / demo_depth.WEIGHTS).read_bytes())
    (depth,) = node.run(torch.rand(2, 96, 160, 3), resolution=64)  # no MiDaS weights: the bundled one
    assert depth.shape == (2, 64, 107, 3) and 0 <= depth.min() and depth.max() <= 1


def test_first_step_trains_from_signal_free_noise_towards_the_image():
    diffusion = Diffusion(first_step=FirstStep(share=0.5, t_from=970))
    x0 = torch.randn(256, 4, 16, 16)
    x_t, t, eps = diffusion.noised(x0, torch.Generator().manual_seed(0))
    free = t >= 970
    assert 0.4 < free.float().mean() < 0.7  # the share drawn, plus uniform draws that land there
    # signal-free inputs are the same whatever the image (same noise draws), others are not
    x_t_other, t_other, _ = diffusion.noised(x0 + 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(t, t_other)
    assert torch.allclose(x_t[free], x_t_other[free])
    assert not torch.allclose(x_t[~free], x_t_other[~free])
    assert torch.allclose(x_t[free].std(), torch.tensor(1.0), atol=0.02)
    # the target noise makes the sampler's x0 estimate the image
    alpha_bar = diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
    estimate = (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    assert torch.allclose(estimate, x0, atol=1e-3)
    # their loss is the x0 error: a wrong prediction costs them ~1/SNR times more than min-SNR would
    cover = torch.zeros(256, 1, 16, 16)
    wrong = eps + 0.1
    plain = Diffusion()
    assert diffusion.loss(wrong[free], eps[free], t[free], cover[free]) > 20 * plain.loss(
        wrong[free], eps[free], t[free], cover[free])
    assert torch.isclose(diffusion.loss(wrong[~free], eps[~free], t[~free], cover[~free]),
                         plain.loss(wrong[~free], eps[~free], t[~free], cover[~free]))


def test_held_targets_are_the_teacher_predictions_below_the_threshold_only():
    torch.manual_seed(0)
    teacher = (train_models.unet().eval(), train_models.text_encoder().eval())
    x_t, eps = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    t = torch.tensor([100, 499, 500, 900])
    tokens = torch.randint(0, 49406, (4, 77))
    held = t < 500
    targets = held_targets(teacher, x_t, t, tokens, eps, held)
    with torch.no_grad():
        own = teacher[0](x_t[:2], t[:2], encoder_hidden_states=teacher[1](tokens[:2]).last_hidden_state).sample
    assert torch.allclose(targets[:2], own, atol=1e-5)
    assert torch.equal(targets[2:], eps[2:])
    assert not torch.allclose(eps[:2], own)  # the input is left as it was
    assert torch.equal(held_targets(teacher, x_t, t, tokens, eps, t < 50), eps)
    # held examples weigh held_weight each, whatever min-SNR would give them
    diffusion, cover, wrong = Diffusion(), torch.zeros(4, 1, 16, 16), targets + 0.1
    assert torch.isclose(diffusion.loss(wrong[:2], targets[:2], t[:2], cover[:2], held[:2], held_weight=10.0),
                         torch.tensor(10 * 0.01))
    assert torch.equal(diffusion.loss(wrong[2:], targets[2:], t[2:], cover[2:], held[2:], held_weight=10.0),
                       diffusion.loss(wrong[2:], targets[2:], t[2:], cover[2:]))


@pytest.mark.parametrize("native", [True, False])
def test_mixed_precision_plans_train_in_bfloat16_where_the_cpu_computes_it(tmp_path, monkeypatch, native):
    """A plan with mixed_precision runs its steps under bfloat16 autocast on a CPU that computes it in
    hardware and in float32 elsewhere; a plan without it always in float32. done.json says which."""
    monkeypatch.setattr(train_common, "bfloat16_native", lambda: native)
    settings = train.parse_args(_args(tmp_path))[1]
    for mixed in (True, False):
        layer = torch.nn.Linear(8, 8)
        plan = train_common.Plan(budget_minutes=1, batch=2, lr=1e-3, steps=2, mixed_precision=mixed)
        trainer = train_common.Trainer(train_common.StageDir(settings, f"mixed_{mixed}"), settings, plan,
                                       {"layer": layer})
        dtypes = []

        def step(rng, noise, batch):
            out = layer(torch.randn(batch, 8, generator=noise))
            dtypes.append(out.dtype)
            return out.float().square().mean()

        assert trainer.run(step)
        expected = torch.bfloat16 if mixed and native else torch.float32
        assert dtypes == [expected, expected]
        assert layer.weight.dtype == torch.float32  # the weights themselves stay float32
        assert trainer.summary()["precision"] == ("bfloat16 autocast" if expected == torch.bfloat16 else "float32")


def test_training_attention_computes_what_the_default_attention_does():
    torch.manual_seed(0)
    unet, text_encoder = train_models.unet().eval(), train_models.text_encoder().eval()
    controlnet = train_models.controlnet(unet).eval()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 900])
    tokens = torch.randint(0, 49406, (2, 77))
    hint = torch.rand(2, 3, 128, 128)

    def outputs():
        with torch.no_grad():
            context = train_data.embed(text_encoder, tokens)
            down, mid = controlnet(x, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
            return context, mid, unet(x, t, encoder_hidden_states=context).sample

    before = outputs()
    train_models.attention_for_training(unet, text_encoder, controlnet)
    assert text_encoder.config._attn_implementation == "eager"
    for model in (unet, controlnet):
        assert {type(p).__name__ for p in model.attn_processors.values()} == {"AttnProcessor"}
    for default, matmul in zip(before, outputs()):
        torch.testing.assert_close(matmul, default, atol=1e-4, rtol=1e-4)
