"""Hostile prompts: A1111's prompt syntax parses in bounded work, and encoding a long prompt stops when
the user interrupts. (Speed itself is measured by bench/bench_prompt_parse.py.)"""
import pytest

from inkwash.nodes.declare import Interrupted, NodeContext
from inkwash.nodes.formats import prompt_syntax


@pytest.fixture
def sequence_calls(monkeypatch):
    """How many times the parser starts reading a sequence: its unit of work."""
    calls = {"n": 0}
    original = prompt_syntax._Parser.sequence

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(prompt_syntax._Parser, "sequence", counted)
    prompt_syntax._tree.cache_clear()
    prompt_syntax.schedule.cache_clear()
    yield calls
    prompt_syntax._tree.cache_clear()
    prompt_syntax.schedule.cache_clear()


@pytest.mark.parametrize("prompt", [
    "[(" * 12,                       # each bracket used to be re-parsed on backtracking: 2^n
    "[(" * 12 + ")]" * 3,
    "[(|" * 10 + ")]" * 10,            # closable brackets whose groups fail
    "[a:" * 15 + "]" * 15,
    "[[[[[[[[[[a|b",                 # the alternation fallback re-reads its first part
    "(((((((((((((a:1.2)" + ":" * 5,
])
def test_bracket_soup_is_parsed_in_linear_work(sequence_calls, prompt):
    prompt_syntax.schedule(prompt, 20)
    prompt_syntax.variants(prompt)
    assert sequence_calls["n"] <= 4 * len(prompt) + 4


def test_alternations_that_read_the_same_are_rendered_once_not_at_every_step(monkeypatch):
    # alternations of many lengths make every step a different choice; these all read "a"
    prompt = "".join(f"[{'|'.join(['a'] * n)}]" for n in range(2, 30)) * 50 + " [cat:dog:0.5]"
    renders = []
    render = prompt_syntax._render
    monkeypatch.setattr(prompt_syntax, "_render", lambda *args: renders.append(1) or render(*args))
    entries = prompt_syntax.schedule(prompt, 1000)
    plain = "a" * (28 * 50) + " "
    assert [end for end, _ in entries] == list(range(1, 1001))  # A1111 lists every step when anything alternates
    assert {text for _, text in entries} == {plain + "cat", plain + "dog"}
    assert dict(entries)[500] == plain + "cat" and dict(entries)[501] == plain + "dog"
    assert len(renders) <= 4  # two texts, each rendered once (with the one edit inside)


def test_a_group_that_does_not_close_is_text_not_an_edit():
    # "(" never closes, so neither does "[": nothing here is a [to:when] edit
    assert prompt_syntax.schedule("[a(0.5]", 10) == ((10, "[a(0.5]"),)
    assert prompt_syntax.variants("[a(0.5]") == ["[a(0.5]"]


def test_deep_nesting_is_bounded_and_keeps_the_text():
    prompt = "[" * 5000 + "a:b:0.5" + "]" * 5000
    # past MAX_NESTING the outer brackets are text (no RecursionError); the innermost edit still works
    outer_open, outer_close = "[" * 4999, "]" * 4999
    assert prompt_syntax.schedule(prompt, 10) == ((5, outer_open + "a" + outer_close),
                                                  (10, outer_open + "b" + outer_close))
    segments = prompt_syntax.emphasis("(" * 3000 + "a" + ")" * 3000)
    assert [text for text, _ in segments] == ["a"] and segments[0][1] > 1e100


def test_emphasis_weights_follow_a1111s_order_of_closing():
    # A1111 multiplies as brackets close, then the unclosed ones: (1.0*1.3)*1.1 then *1.1
    assert prompt_syntax.emphasis("(((house:1.3))") == [("house", 1.0 * 1.3 * 1.1 * 1.1)]
    # BREAK with spaces around it, inside a long run of spaces
    assert prompt_syntax.emphasis("a" + " " * 10000 + "BREAK b") == [("a", 1.0), prompt_syntax.BREAK, ("b", 1.0)]


def test_too_many_prompt_texts_is_refused_early():
    with pytest.raises(ValueError, match="different prompts"):
        prompt_syntax.variants("[a|b]" * 5000)


def test_encoding_a_long_prompt_stops_when_interrupted():
    from inkwash.nodes.core.conditioning import CLIPTextEncode
    from tiny_models import tiny_sd1

    _, clip, _ = tiny_sd1()
    checks = {"n": 0}

    def interrupted():
        checks["n"] += 1
        return checks["n"] > 2  # the user interrupts while the second window is due (the first check
        # comes before the prompt's one segment is tokenized)

    node = CLIPTextEncode(NodeContext("6", is_interrupted=interrupted))
    with pytest.raises(Interrupted):
        node.run(text="a red circle, " * 200, clip=clip)  # 800 tokens: 11 windows
    assert checks["n"] == 3


def test_tokenizing_a_prompt_of_many_segments_stops_when_interrupted(monkeypatch):
    from inkwash.nodes.core.conditioning import CLIPTextEncode
    from tiny_models import tiny_sd1

    _, clip, _ = tiny_sd1()
    tokenizer_type, calls = type(clip.tokenizers[0]), []
    tokenize = tokenizer_type.__call__
    monkeypatch.setattr(tokenizer_type, "__call__", lambda self, *a, **k: calls.append(1) or tokenize(self, *a, **k))
    checks = {"n": 0}

    def interrupted():
        checks["n"] += 1
        return checks["n"] > 5

    node = CLIPTextEncode(NodeContext("6", is_interrupted=interrupted))
    with pytest.raises(Interrupted):
        node.run(text="(a:1.1) [b] " * 2000, clip=clip)  # 8000 weighted segments, each tokenized on its own
    assert len(calls) == 5
