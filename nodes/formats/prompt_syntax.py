"""AUTOMATIC1111's prompt syntax, parsed to the same results as A1111's own parser.

Two passes, as in A1111:

1. Scheduling (`schedule`, `variants`): prompt editing and alternation choose, per sampling step, which
   plain prompt text is encoded.
       [from:to:when]   `from` until step `when`, then `to`     (when < 1: a fraction of the steps)
       [to:when]        nothing until `when`, then `to`
       [from::when]     `from` until `when`, then nothing
       [a|b|c]          a, b, c, a, ... one per step
   Brackets that are not an edit or an alternation, and everything in parentheses, pass through as
   text (they are emphasis, for the second pass). A bracket that does not close is plain text.
2. Emphasis (`emphasis`): one text -> (text, weight) segments.
       (word) x1.1   ((word)) x1.21   [word] /1.1   (word:1.3) x1.3   \\( \\) \\[ \\] \\\\ literal
       BREAK            ends the current 75-token chunk (segment ("BREAK", -1.0))
   Unclosed brackets apply to the end of the prompt.
"""
from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

BREAK = ("BREAK", -1.0)
SCHEDULE_KEY = "prompt_schedule"  # Cond.extra key: (prompt, text) of a Cond that prompt editing selects
ROUND, SQUARE = 1.1, 1 / 1.1
MAX_VARIANTS = 256  # distinct texts one prompt may schedule (each is encoded)


# -- pass 1: prompt editing and alternation ------------------------------------------------------------

@dataclass(frozen=True)
class _Edit:
    before: tuple  # nodes shown until `when`; empty for [to:when]
    after: tuple
    when: float


@dataclass(frozen=True)
class _Alternation:
    options: tuple  # of node tuples


# A node is a str (text as written, escapes kept) or an _Edit / _Alternation; a sequence is a tuple.
_SPECIAL = "[]():|"
_EMBEDDING = re.compile(r"embedding:[^\s\[\]():|,\\]+")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\]")


class _Parser:
    """Recursive descent over A1111's grammar. Inside a group every special character must belong to a
    construct, or the group fails and its opening bracket is plain text; at the top level a stray
    special character is plain text."""

    def __init__(self, text: str):
        self.text = text

    def sequence(self, i: int, stops: str, top: bool = False, pipe_is_text: bool = False) -> tuple[tuple, int]:
        nodes: list = []
        while i < len(self.text):
            char = self.text[i]
            if char == "\\":
                nodes.append(self.text[i:i + 2])
                i += 2
                continue
            embedding = _EMBEDDING.match(self.text, i)
            if embedding:  # ComfyUI's embedding:NAME is text, its ":" no edit
                nodes.append(embedding.group(0))
                i = embedding.end()
                continue
            if char not in _SPECIAL or (char == "|" and pipe_is_text):
                end = i + 1
                while (end < len(self.text) and self.text[end] not in _SPECIAL and self.text[end] != "\\"
                       and not _EMBEDDING.match(self.text, end)):
                    end += 1
                nodes.append(self.text[i:end])
                i = end
                continue
            group = self.bracket(i) if char == "[" else self.paren(i) if char == "(" else None
            if group is not None:
                node, i = group
                nodes.extend(node)
            elif char in stops or not top:
                break
            else:
                nodes.append(char)
                i += 1
        return tuple(nodes), i

    def paren(self, i: int):
        """(prompt) or (prompt:prompt): kept as text; only edits inside it matter here."""
        inner, j = self.sequence(i + 1, ":)")
        if j < len(self.text) and self.text[j] == ":":
            weight, j = self.sequence(j + 1, ")")
            inner = inner + (":",) + weight
        if j < len(self.text) and self.text[j] == ")":
            return ("(",) + inner + (")",), j + 1
        return None

    def bracket(self, i: int):
        first, j = self.sequence(i + 1, ":|]")
        if j < len(self.text) and self.text[j] == "|":
            options = [first]
            while j < len(self.text) and self.text[j] == "|":
                option, j = self.sequence(j + 1, "|]")
                options.append(option)
            if j < len(self.text) and self.text[j] == "]":
                return (_Alternation(tuple(options)),), j + 1
            # not an alternation: A1111 then reads its "|" as text ("[{b|d{:.5]" is an edit)
            first, j = self.sequence(i + 1, ":]", pipe_is_text=True)
        if j >= len(self.text):
            return None
        if self.text[j] == "]":  # [prompt]: de-emphasis, kept as text
            return ("[",) + first + ("]",), j + 1
        number = _NUMBER.match(self.text, j + 1)  # [to:when]
        if number:
            return (_Edit((), first, float(number.group(1))),), number.end()
        second, j = self.sequence(j + 1, ":]")
        if j < len(self.text) and self.text[j] == ":":
            number = _NUMBER.match(self.text, j + 1)
            if number:
                return (_Edit(first, second, float(number.group(1))),), number.end()
        return None


@functools.lru_cache(maxsize=256)
def _tree(prompt: str) -> tuple:
    return _Parser(prompt).sequence(0, "", top=True)[0]


def _walk(nodes: tuple):
    for node in nodes:
        yield node
        if isinstance(node, _Edit):
            yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, _Alternation):
            for option in node.options:
                yield from _walk(option)


def _step_of(when: float, steps: int) -> int:
    return min(steps, int(when * steps if when < 1 else when))


def _render(nodes: tuple, step: int, steps: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, _Edit):
            out.append(_render(node.before if step <= _step_of(node.when, steps) else node.after, step, steps))
        elif isinstance(node, _Alternation):
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
        else:
            out.append(node)
    return "".join(out)


@functools.lru_cache(maxsize=256)
def schedule(prompt: str, steps: int) -> tuple[tuple[int, str], ...]:
    """((end_at_step, text), ...): `text` is used while the sampling step (counted from 0) is at most
    `end_at_step`; the last entry ends at `steps`."""
    tree = _tree(prompt)
    ends = {steps}
    for node in _walk(tree):
        if isinstance(node, _Edit):
            ends.add(_step_of(node.when, steps))
        elif isinstance(node, _Alternation):
            ends.update(range(1, steps + 1))
    return tuple((end, _render(tree, end, steps)) for end in sorted(ends))


def text_at(prompt: str, steps: int, step: int) -> str:
    """The text prompt editing selects at sampling step `step` (0-based) of `steps`."""
    entries = schedule(prompt, steps)
    return next((text for end, text in entries if step <= end), entries[-1][1])


def variants(prompt: str) -> list[str]:
    """Every text `schedule` can give for this prompt at any step count (in first-seen order), so the
    texts can be encoded before the step count is known."""
    texts = dict.fromkeys(_variants(_tree(prompt)))
    if len(texts) > MAX_VARIANTS:
        raise ValueError(f"prompt editing in this prompt gives {len(texts)} different prompts "
                         f"(at most {MAX_VARIANTS})")
    return list(texts)


def _variants(nodes: tuple) -> list[str]:
    choices = []
    for node in nodes:
        if isinstance(node, _Edit):
            choices.append(_variants(node.before) + _variants(node.after))
        elif isinstance(node, _Alternation):
            choices.append([text for option in node.options for text in _variants(option)])
        else:
            choices.append([node])
        if len(choices[-1]) > MAX_VARIANTS:
            choices[-1] = choices[-1][:MAX_VARIANTS + 1]
    combined = [""]
    for options in choices:
        combined = list(dict.fromkeys(a + b for a, b in itertools.product(combined, options)))[:MAX_VARIANTS + 1]
    return combined


# -- pass 2: emphasis ---------------------------------------------------------------------------------

_EMPHASIS_TOKEN = re.compile(r"""
    \\[()\[\]\\] | \\         # escaped bracket or backslash; a lone backslash
  | \( | \[                   # openers
  | :([+-]?[.\d]+)\)          # explicit weight closing a round bracket
  | \) | \]                   # closers
  | [^\\()\[\]:]+ | :         # text
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def emphasis(text: str) -> list[tuple[str, float]]:
    """(text, weight) segments; weights multiply in the order brackets close, as A1111's."""
    segments: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for segment in segments[start:]:
            if segment[1] != BREAK[1]:
                segment[1] *= factor

    for match in _EMPHASIS_TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            segments.append([token[1:], 1.0])
        elif token == "(":
            rounds.append(len(segments))
        elif token == "[":
            squares.append(len(segments))
        elif weight is not None and rounds and _is_number(weight):
            multiply(rounds.pop(), float(weight))
        elif token == ")" and rounds:
            multiply(rounds.pop(), ROUND)
        elif token == "]" and squares:
            multiply(squares.pop(), SQUARE)
        else:
            # a stray closer, or ":1.2)" with no opener, is text (A1111 keeps the whole match)
            for index, part in enumerate(_BREAK.split(token)):
                if index:
                    segments.append(list(BREAK))
                segments.append([part, 1.0])
    for start in rounds:
        multiply(start, ROUND)
    for start in squares:
        multiply(start, SQUARE)
    return _merged(segments)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _merged(segments: list[list]) -> list[tuple[str, float]]:
    """Neighbours of equal weight joined (BREAKs stay apart)."""
    out: list[list] = []
    for text, weight in segments:
        if out and out[-1][1] == weight and weight != BREAK[1]:
            out[-1][0] += text
        else:
            out.append([text, weight])
    return [tuple(s) for s in out] or [("", 1.0)]
