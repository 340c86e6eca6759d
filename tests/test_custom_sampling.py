"""ComfyUI's custom-sampling nodes: declarations, and the same numbers as KSampler for the same choices."""
import pytest
import torch

from inkwash.nodes.core import custom_sampling as cs
from inkwash.nodes.core.sampling import KSampler, KSamplerAdvanced
from inkwash.nodes.declare import Input, Node, Output, Result
from inkwash.nodes.executor import Executor
from inkwash.nodes.registry import core_nodes
from inkwash.nodes.runtime import sampling, sigmas, text_encode
from tiny_models import tiny_sd1


@pytest.fixture(scope="module")
def sd1():
    model, clip, _ = tiny_sd1()
    return model, text_encode.encode(clip, "a red cube"), text_encode.encode(clip, "blurry")


def empty(batch=2):
    return {"samples": torch.zeros(batch, 4, 8, 8)}


def custom(sd1, sampler, scheduler, steps, denoise=1.0, latent=None, seed=3, add_noise=True):
    model, pos, neg = sd1
    (chosen,) = cs.KSamplerSelect().run(sampler)
    (walk,) = cs.BasicScheduler().run(model, scheduler, steps, denoise)
    return cs.SamplerCustom().run(model, add_noise, seed, 6.0, pos, neg, chosen, walk, latent or empty())


def test_declarations_follow_comfyui():
    registry = core_nodes()
    for name in cs.NODES:
        assert registry[name] is cs.NODES[name]
    info = cs.SamplerCustom.object_info("SamplerCustom")
    assert info["input_order"]["required"] == ["model", "add_noise", "noise_seed", "cfg", "positive", "negative",
                                               "sampler", "sigmas", "latent_image"]
    assert info["output"] == ["LATENT", "LATENT"] and info["output_name"] == ["output", "denoised_output"]
    advanced = cs.SamplerCustomAdvanced.object_info("SamplerCustomAdvanced")
    assert advanced["input_order"]["required"] == ["noise", "guider", "sampler", "sigmas", "latent_image"]
    assert cs.SplitSigmas.object_info("SplitSigmas")["output_name"] == ["high_sigmas", "low_sigmas"]
    karras = cs.KarrasScheduler.object_info("KarrasScheduler")["input"]["required"]
    assert karras["sigma_max"][1]["default"] == 14.614642 and karras["rho"][1]["default"] == 7.0
    assert cs.KSamplerSelect.object_info("KSamplerSelect")["input"]["required"]["sampler_name"][0][0] == "euler"
    assert cs.RandomNoise.object_info("RandomNoise")["input"]["required"]["noise_seed"][1]["control_after_generate"]


@pytest.mark.parametrize("sampler,scheduler,denoise", [("euler_ancestral", "normal", 1.0), ("dpmpp_2m", "karras", 0.5)])
def test_sampler_custom_is_ksampler(sd1, sampler, scheduler, denoise):
    model, pos, neg = sd1
    start = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    latent = start if denoise < 1 else empty()
    output, denoised = custom(sd1, sampler, scheduler, 4, denoise, latent)
    (expected,) = KSampler().run(model, 3, 4, 6.0, sampler, scheduler, pos, neg, latent, denoise)
    assert torch.equal(output["samples"], expected["samples"])
    # both samplers' last step lands on its clean prediction, which is denoised_output
    torch.testing.assert_close(denoised["samples"], output["samples"], rtol=1e-5, atol=1e-4)


def test_sampler_custom_advanced_with_split_sigmas_is_ksampler_advanced(sd1):
    model, pos, neg = sd1
    (walk,) = cs.BasicScheduler().run(model, "normal", 6, 1.0)
    high, low = cs.SplitSigmas().run(walk, 3)
    assert torch.equal(high[-1], low[0]) and len(high) == 4 and len(low) == 4
    (guider,), (chosen,) = cs.CFGGuider().run(model, pos, neg, 6.0), cs.KSamplerSelect().run("euler")
    (noise,), (no_noise,) = cs.RandomNoise().run(9), cs.DisableNoise().run()
    first, _ = cs.SamplerCustomAdvanced().run(noise, guider, chosen, high, empty())
    second, _ = cs.SamplerCustomAdvanced().run(no_noise, guider, chosen, low, first)
    (part,) = KSamplerAdvanced().run(model, "enable", 9, 6, 6.0, "euler", "normal", pos, neg, empty(), 0, 3, "enable")
    (rest,) = KSamplerAdvanced().run(model, "disable", 9, 6, 6.0, "euler", "normal", pos, neg, part, 3, 10000,
                                     "disable")
    assert torch.equal(first["samples"], part["samples"]) and torch.equal(second["samples"], rest["samples"])


def test_basic_guider_is_cfg_1_without_a_negative(sd1):
    model, pos, _ = sd1
    (guider,), (chosen,) = cs.BasicGuider().run(model, pos), cs.KSamplerSelect().run("euler")
    (walk,) = cs.BasicScheduler().run(model, "simple", 3, 1.0)
    out, _ = cs.SamplerCustomAdvanced().run(cs.RandomNoise().run(2)[0], guider, chosen, walk, empty(1))
    expected = sampling.sample(model, pos, [], empty(1), 2, 3, 1.0, "euler", "simple")["samples"]
    assert torch.equal(out["samples"], expected)


def test_schedulers(sd1):
    model = sd1[0]
    table = sigmas.DiscreteSchedule(model.scheduler_config)
    (karras,) = cs.KarrasScheduler().run(5, 14.614642, 0.0291675, 7.0)
    (expo,) = cs.ExponentialScheduler().run(5, 10.0, 0.1)
    assert len(karras) == 6 and karras[0] == pytest.approx(14.614642) and karras[-2] == pytest.approx(0.0291675)
    assert expo[-1] == 0 and torch.allclose(expo[:-1].log().diff(), torch.full((4,), (0.1 / 10.0) ** 0.25).log())
    (turbo,) = cs.SDTurboScheduler().run(model, 1, 1.0)
    torch.testing.assert_close(turbo, torch.stack([table.sigmas[999], torch.tensor(0.0)]))
    (turbo,) = cs.SDTurboScheduler().run(model, 2, 0.5)  # starts at 499, then 399
    assert torch.allclose(turbo[:2], table.sigmas[[499, 399]]) and turbo[-1] == 0
    (none,) = cs.BasicScheduler().run(model, "normal", 4, 0.0)
    assert len(none) == 0
    assert torch.equal(custom(sd1, "euler", "normal", 4, 0.0, {"samples": torch.ones(1, 4, 8, 8)})[0]["samples"],
                       torch.ones(1, 4, 8, 8))


def test_custom_sampling_graph_runs(sd1):
    model, pos, neg = sd1

    class Constant(Node):
        outputs = (Output("MODEL"), Output("CONDITIONING"), Output("CONDITIONING"), Output("LATENT"))

        def run(self):
            return model, pos, neg, empty(1)

    class Collect(Node):
        inputs = (Input("samples", "LATENT"), Input("denoised", "LATENT"))
        output_node = True

        def run(self, samples, denoised):
            return Result(ui={"finite": bool(torch.isfinite(samples["samples"]).all()),
                              "shape": list(denoised["samples"].shape)})

    registry = {**core_nodes(), "Constant": Constant, "Collect": Collect}
    workflow = {
        "1": {"class_type": "Constant", "inputs": {}},
        "2": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m_sde"}},
        "3": {"class_type": "KarrasScheduler", "inputs": {"steps": 3, "sigma_max": 14.6, "sigma_min": 0.03, "rho": 7.0}},
        "4": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "5": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2],
                                                    "cfg": 5.0}},
        "6": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["4", 0], "guider": ["5", 0],
                                                               "sampler": ["2", 0], "sigmas": ["3", 0],
                                                               "latent_image": ["1", 3]}},
        "7": {"class_type": "Collect", "inputs": {"samples": ["6", 0], "denoised": ["6", 1]}},
    }
    events = []
    result = Executor(registry).execute(workflow, on_event=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    assert result.outputs["7"] == {"finite": True, "shape": [1, 4, 8, 8]}
    assert [(d["value"], d["max"]) for kind, d in events if kind == "progress"] == [(1, 3), (2, 3), (3, 3)]
