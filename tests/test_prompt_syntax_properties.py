"""A1111's prompt syntax on small random bracket soups (Hypothesis): the fast parser gives what the syntax's
plain definitions give, written here the simple way (A1111's own algorithm for emphasis; the grammar as a
backtracking recursive descent, with A1111's way of collecting steps, for prompt editing)."""
import itertools
import re

from hypothesis import given, settings, strategies as st

from inkwash.nodes.formats import prompt_syntax

PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, database=None)
PIECES = ["(", ")", "[", "]", ":", "|", "\\", " ", "a", "b", "1", "0.5", ".", "-", "e", "BREAK", " BREAK ",
          ":1.5)", ":-1)", ": 2 )", ": -1)", "0.5]", "embedding:x", "\\(", "\\]"]
soups = st.lists(st.sampled_from(PIECES), max_size=16).map("".join)


# -- emphasis: A1111's parse_prompt_attention --------------------------------------------------------------

_A1111_TOKEN = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_A1111_BREAK = re.compile(r"\s*\bBREAK\b\s*")


def a1111_emphasis(text: str) -> list[tuple[str, float]]:
    """A1111's modules/prompt_parser.py parse_prompt_attention: each closing bracket multiplies the weight
    of every segment since its opening one, the unclosed ones at the end. With this project's choices: an
    explicit weight that is no number ("1.2.3") is text, a BREAK keeps the weight -1 whatever brackets are
    around it, and segments of weight -1 are never joined."""
    res: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def multiply_range(start: int, factor: float) -> None:
        for segment in res[start:]:
            if segment[0] is not prompt_syntax.BREAK:
                segment[1] *= factor

    for match in _A1111_TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            rounds.append(len(res))
        elif token == "[":
            squares.append(len(res))
        elif weight is not None and rounds and _is_number(weight):
            multiply_range(rounds.pop(), float(weight))
        elif token == ")" and rounds:
            multiply_range(rounds.pop(), 1.1)
        elif token == "]" and squares:
            multiply_range(squares.pop(), 1 / 1.1)
        else:
            for index, part in enumerate(_A1111_BREAK.split(token)):
                if index:
                    res.append([prompt_syntax.BREAK, -1.0])
                res.append([part, 1.0])
    for start in rounds:
        multiply_range(start, 1.1)
    for start in squares:
        multiply_range(start, 1 / 1.1)
    merged: list[list] = []
    for text_or_break, weight in res:
        if text_or_break is prompt_syntax.BREAK:
            merged.append(list(prompt_syntax.BREAK))
        elif merged and merged[-1][1] == weight and weight != -1.0:
            merged[-1][0] += text_or_break
        else:
            merged.append([text_or_break, weight])
    return [tuple(segment) for segment in merged] or [("", 1.0)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@PROPERTY
@given(soups)
def test_emphasis_is_a1111s_algorithm(prompt):
    assert prompt_syntax.emphasis(prompt) == a1111_emphasis(prompt)


@PROPERTY
@given(st.lists(st.sampled_from(["(", "[", ")", "]", "a", ":0.5)", "BREAK", "\\("]), max_size=40).map("".join))
def test_emphasis_of_deeper_soups_is_a1111s_algorithm(prompt):
    if prompt.count("(") + prompt.count("[") <= prompt_syntax.EXACT_NESTING:  # exact up to that many
        assert prompt_syntax.emphasis(prompt) == a1111_emphasis(prompt)


# -- prompt editing: the grammar, plainly ----------------------------------------------------------------

_EMBEDDING = re.compile(r"embedding:[^\s\[\]():|,\\]+")
_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\]")


class PlainParser:
    """[from:to:when], [to:when], [a|b|c] and emphasis brackets (text here) by backtracking recursive
    descent, every group parsed afresh wherever it is tried. Inside a group every special character
    belongs to a construct or the group fails (its bracket is text); at the top level a stray one is text;
    an alternation that does not close reads its "|" as text."""

    def __init__(self, text: str):
        self.text = text

    def sequence(self, i: int, top: bool = False, pipe_is_text: bool = False) -> tuple[list, int]:
        text, nodes, start = self.text, [], i
        while i < len(text):
            char = text[i]
            embedding = _EMBEDDING.match(text, i)
            if char == "\\":
                i += 2
            elif embedding:
                i = embedding.end()
            elif char not in "[]():|" or (char == "|" and pipe_is_text):
                i += 1
            elif char in "[(" and (found := self.group(i)):
                inner, end = found
                if inner:
                    nodes += [text[start:i]] if start < i else []
                    nodes += inner
                    start = end
                i = end
            elif top:
                i += 1
            else:
                break
        i = min(i, len(text))
        return nodes + ([text[start:i]] if start < i else []), i

    def group(self, i: int):
        if self.text[i] == "(":
            inner, j = self.sequence(i + 1)
            if self.at(j, ":"):
                weight, j = self.sequence(j + 1)
                inner = inner + [":"] + weight
            if self.at(j, ")"):
                return ([] if all(isinstance(n, str) for n in inner) else ["("] + inner + [")"]), j + 1
            return None
        first, j = self.sequence(i + 1)
        if self.at(j, "|"):
            options = [first]
            while self.at(j, "|"):
                option, j = self.sequence(j + 1)
                options.append(option)
            if self.at(j, "]"):
                return [("alternate", options)], j + 1
            first, j = self.sequence(i + 1, pipe_is_text=True)
        if self.at(j, "]"):
            return ([] if all(isinstance(n, str) for n in first) else ["["] + first + ["]"]), j + 1
        if not self.at(j, ":"):
            return None
        if when := _WHEN.match(self.text, j + 1):
            return [("edit", [], first, float(when.group(1)))], when.end()
        second, j = self.sequence(j + 1)
        if self.at(j, ":") and (when := _WHEN.match(self.text, j + 1)):
            return [("edit", first, second, float(when.group(1)))], when.end()
        return None

    def at(self, j: int, char: str) -> bool:
        return j < len(self.text) and self.text[j] == char


def _render(nodes: list, step: int, steps: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "edit":
            _, before, after, when = node
            out.append(_render(before if step <= _step_of(when, steps) else after, step, steps))
        else:
            out.append(_render(node[1][(step - 1) % len(node[1])], step, steps))
    return "".join(out)


def _step_of(when: float, steps: int) -> int:
    return min(steps, int(when * steps if when < 1 else when))


def _all_nodes(nodes: list):
    for node in nodes:
        yield node
        if not isinstance(node, str):
            for part in (node[1:3] if node[0] == "edit" else node[1]):
                yield from _all_nodes(part)


def plain_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """A1111's get_learned_conditioning_prompt_schedules: the text at every step an edit switches (every
    step if anything alternates) and at the last."""
    tree = PlainParser(prompt).sequence(0, top=True)[0]
    ends = {steps}
    for node in _all_nodes(tree):
        if not isinstance(node, str):
            ends |= {_step_of(node[3], steps)} if node[0] == "edit" else set(range(1, steps + 1))
    return [(end, _render(tree, end, steps)) for end in sorted(ends)]


def plain_variants(prompt: str) -> list[str]:
    """Every text the tree can render, choosing each edit's side and each alternation's option freely."""
    def texts(nodes: list) -> list[str]:
        combined = [""]
        for node in nodes:
            if isinstance(node, str):
                options = [node]
            elif node[0] == "edit":
                options = texts(node[1]) + texts(node[2])
            else:
                options = [text for option in node[1] for text in texts(option)]
            combined = list(dict.fromkeys(a + b for a, b in itertools.product(combined, options)))
        return combined
    return texts(PlainParser(prompt).sequence(0, top=True)[0])


@PROPERTY
@given(soups, st.sampled_from([1, 2, 3, 7, 10]))
def test_schedule_and_variants_follow_the_grammar(prompt, steps):
    assert list(prompt_syntax.schedule(prompt, steps)) == plain_schedule(prompt, steps)
    assert prompt_syntax.variants(prompt) == plain_variants(prompt)


@PROPERTY
@given(st.lists(st.sampled_from(["[", "]", "(", ")", "a", ":", "|", "0.5]", ":1]", "[a:b:1]", "[a|b]"]),
                max_size=24).map("".join), st.sampled_from([2, 10]))
def test_nested_edits_follow_the_grammar(prompt, steps):
    assert list(prompt_syntax.schedule(prompt, steps)) == plain_schedule(prompt, steps)
    texts = prompt_syntax.variants(prompt)
    assert {text for _, text in prompt_syntax.schedule(prompt, steps)} <= set(texts)


@PROPERTY
@given(soups)
def test_escaping_every_special_character_leaves_plain_text(prompt):
    escaped = re.sub(r"([\\()\[\]])", r"\\\1", prompt)
    assert prompt_syntax.schedule(escaped, 10) == ((10, escaped),)
    assert prompt_syntax.variants(escaped) == [escaped]
    segments = prompt_syntax.emphasis(escaped)
    assert all(weight == 1.0 or (text, weight) == prompt_syntax.BREAK for text, weight in segments)
    if "BREAK" not in prompt:
        assert segments == [(prompt, 1.0)]
