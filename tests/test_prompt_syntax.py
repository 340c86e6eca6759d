"""A1111's prompt syntax: parsed exactly as A1111's documented examples, encoded, and scheduled per step."""
import pytest
import torch

from inkwash.nodes.formats import prompt_syntax
from inkwash.nodes.runtime import sampling, text_encode
from tiny_models import tiny_sd1

# A1111's modules/prompt_parser.py doctests: prompt -> schedule at 10 steps.
A1111_SCHEDULES = {
    "test": [(10, "test")],
    "a [b:3]": [(3, "a "), (10, "a b")],
    "a [b: 3]": [(3, "a "), (10, "a b")],
    "a [[[b]]:2]": [(2, "a "), (10, "a [[b]]")],
    "[(a:2):3]": [(3, ""), (10, "(a:2)")],
    "a [b : c : 1] d": [(1, "a b  d"), (10, "a  c  d")],
    "a[b:[c:d:2]:1]e": [(1, "abe"), (2, "ace"), (10, "ade")],
    "a [unbalanced": [(10, "a [unbalanced")],
    "a [b:.5] c": [(5, "a  c"), (10, "a b c")],
    "a [{b|d{:.5] c": [(5, "a  c"), (10, "a {b|d{ c")],
    "((a][:b:c [d:3]": [(3, "((a][:b:c "), (10, "((a][:b:c d")],
    "[a|(b:1.1)]": [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)],
    "[fe|]male": [(s, "female" if s % 2 else "male") for s in range(1, 11)],
    "[fe|||]male": [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)],
    # the forms: [from:to:when], [to:when], [from::when], fraction vs step
    "a [cat:dog:0.25] b": [(2, "a cat b"), (10, "a dog b")],
    "[a:b:0.5]": [(5, "a"), (10, "b")],
    "[a|b]": [(s, "a" if s % 2 else "b") for s in range(1, 11)],
    "a (b:1.5) [c] \\(d\\)": [(10, "a (b:1.5) [c] \\(d\\)")],
    "[cat::4] dog": [(4, "cat dog"), (10, " dog")],
    "x [y:z:25]": [(10, "x y")],  # a step past the end is capped at the last step
    # ComfyUI's embedding:NAME is text: its colon starts no edit
    "[a dog:an embedding:crimson:0.5] x": [(5, "a dog x"), (10, "an embedding:crimson x")],
    "[embedding:x.pt|dog]": [(s, "embedding:x.pt" if s % 2 else "dog") for s in range(1, 11)],
}

# A1111's parse_prompt_attention doctests.
A1111_EMPHASIS = {
    "normal text": [("normal text", 1.0)],
    "an (important) word": [("an ", 1.0), ("important", 1.1), (" word", 1.0)],
    "(unbalanced": [("unbalanced", 1.1)],
    "\\(literal\\]": [("(literal]", 1.0)],
    "(unnecessary)(parens)": [("unnecessaryparens", 1.1)],
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).": [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
        (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)],
    # the rest of the syntax the issue lists
    "((word))": [("word", 1.1 * 1.1)],
    "[word]": [("word", 1 / 1.1)],
    "(word:1.3)": [("word", 1.3)],
    "(word: 1.3 ) (cat:-1)": [("word", 1.3), (" ", 1.0), ("cat", -1.0)],  # spaces allowed, as in A1111
    "a (b:1.5) [c]": [("a ", 1.0), ("b", 1.5), (" ", 1.0), ("c", 1 / 1.1)],
    "\\(": [("(", 1.0)],
    "a \\(b\\) \\\\ c": [("a (b) \\ c", 1.0)],
    "a red circle BREAK blue background": [("a red circle", 1.0), prompt_syntax.BREAK, ("blue background", 1.0)],
    "(a BREAK b)": [("a", 1.1), prompt_syntax.BREAK, ("b", 1.1)],
    "": [("", 1.0)],
}


@pytest.mark.parametrize("prompt", A1111_SCHEDULES)
def test_schedules_match_a1111(prompt):
    assert list(prompt_syntax.schedule(prompt, 10)) == A1111_SCHEDULES[prompt]


@pytest.mark.parametrize("prompt", A1111_SCHEDULES)
def test_variants_are_every_scheduled_text(prompt):
    texts = set(prompt_syntax.variants(prompt))
    for steps in (1, 2, 3, 5, 10, 40):
        assert {text for _, text in prompt_syntax.schedule(prompt, steps)} <= texts


@pytest.mark.parametrize("prompt", A1111_EMPHASIS)
def test_emphasis_matches_a1111(prompt):
    assert prompt_syntax.emphasis(prompt) == A1111_EMPHASIS[prompt]


def test_text_at_counts_steps_from_zero_as_a1111():
    # A1111 uses an entry while the 0-based step is <= its end_at_step
    chosen = [prompt_syntax.text_at("[red:blue:0.5] circle", 10, step) for step in range(10)]
    assert chosen == ["red circle"] * 6 + ["blue circle"] * 4
    assert [prompt_syntax.text_at("[a|b]", 4, step) for step in range(4)] == ["a", "a", "b", "a"]


def test_too_many_alternations_is_an_error():
    with pytest.raises(ValueError, match="different prompts"):
        prompt_syntax.variants(" ".join(f"[a{i}|b{i}]" for i in range(9)))


# -- encoding ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd1():
    return tiny_sd1()


def test_weight_1_is_the_plain_prompt_and_emphasis_changes_only_that_token(sd1):
    _, clip, _ = sd1
    plain = text_encode.encode(clip, "a red circle")[0].embeds
    assert torch.equal(text_encode.encode(clip, "a (red:1.0) circle")[0].embeds, plain)
    weighted = text_encode.encode(clip, "a (red:1.5) circle")[0].embeds
    assert weighted.shape == plain.shape
    # A1111 scales the weighted token's features by 1.5, then rescales the window to its old mean
    ratio = weighted[0] / plain[0]  # [77, D]: one factor c everywhere, 1.5 c on "red"
    c = ratio[0, 0]
    red = 2  # [start, a, red, circle, end, padding...]
    assert torch.allclose(ratio[red], 1.5 * c, rtol=1e-4)
    others = torch.cat([ratio[:red], ratio[red + 1:]])
    assert torch.allclose(others, c.expand_as(others), rtol=1e-4)
    assert torch.isclose(weighted.mean(), plain.mean(), rtol=1e-4)


def test_break_starts_a_new_window(sd1):
    _, clip, _ = sd1
    cond = text_encode.encode(clip, "a red circle BREAK blue background")
    assert len(cond) == 1 and cond[0].embeds.shape[1] == 154


def test_prompt_editing_encodes_each_text_once_with_its_schedule(sd1):
    _, clip, _ = sd1
    conds = text_encode.encode(clip, "a [red:blue:0.5] circle")
    assert [c.extra[prompt_syntax.SCHEDULE_KEY] for c in conds] == [
        ("a [red:blue:0.5] circle", "a red circle"), ("a [red:blue:0.5] circle", "a blue circle")]
    assert torch.equal(conds[1].embeds, text_encode.encode(clip, "a blue circle")[0].embeds)


def _sample(model, positive, negative, steps, **kw):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return sampling.sample(model, positive, negative, kw.pop("latent", latent), 3, steps, 5.0, "euler", "normal",
                           **kw)["samples"]


def test_prompt_editing_switches_conditioning_at_the_scheduled_step(sd1):
    model, clip, _ = sd1
    negative = text_encode.encode(clip, "")
    edited = _sample(model, text_encode.encode(clip, "a [red:blue:0.5] circle"), negative, 6)
    # 6 steps, when 0.5 -> step 3: steps 0-3 draw "a red circle", steps 4-5 "a blue circle"
    red, blue = text_encode.encode(clip, "a red circle"), text_encode.encode(clip, "a blue circle")
    first = _sample(model, red, negative, 6, end_step=4, return_with_leftover_noise=True)
    by_hand = _sample(model, blue, negative, 6, latent={"samples": first}, start_step=4, add_noise=False)
    assert (edited - by_hand).abs().max() < 1e-4 * by_hand.abs().max()
    assert (edited - _sample(model, red, negative, 6)).abs().max() > 1e-3


def test_alternation_changes_the_prompt_every_step(sd1):
    model, clip, _ = sd1
    negative = text_encode.encode(clip, "")
    conds = text_encode.encode(clip, "[cat|dog]")
    guide = sampling._guide(model, conds, negative, 5.0, torch.zeros(1, 4, 8, 8), None)
    picked = []
    for step in range(5):
        active = guide.at_step(step, 5)
        assert active.negatives == 1 and len(active.schedules) == 2
        picked.append(active.schedules[1][1])
    assert picked == ["cat", "cat", "dog", "cat", "dog"]


def test_emphasis_on_a_zero_mean_output_scales_the_token_and_stays_finite():
    hidden = torch.randn(1, 77, 8)
    hidden = hidden - hidden.mean(dim=-1, keepdim=True)  # what a bias-free final layer norm gives
    weights = [1.0] * 77
    weights[2] = 1.5
    weighted = text_encode._apply_weights(hidden, weights)
    assert torch.isfinite(weighted).all()
    assert torch.allclose(weighted[0, 2], 1.5 * hidden[0, 2])
    assert torch.allclose(weighted[0, 3:], hidden[0, 3:])
