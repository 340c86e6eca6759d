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

import bisect
import functools
import itertools
import math
import re
from dataclasses import dataclass

BREAK = ("BREAK", -1.0)
SCHEDULE_KEY = "prompt_schedule"  # Cond.extra key: (prompt, text) of a Cond that prompt editing selects
ROUND, SQUARE = 1.1, 1 / 1.1
EXACT_NESTING = 16  # emphasis weights follow A1111's float arithmetic up to this many open brackets
MAX_VARIANTS = 256  # distinct texts one prompt may schedule (each is encoded)
MAX_VARIANT_CHARS = 4_000_000  # all those texts together
MAX_NESTING = 100  # brackets nested deeper than this are text (bounds the parser's recursion)


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
# possessive quantifiers: a long run of digits or spaces is scanned once, never backtracked over
_NUMBER = re.compile(r"\s*+([+-]?+(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?+\d++)?+)\]")
_PLAIN = re.compile(r"[^\[\]():|\\e]*+")  # a run of text up to the next special character or "e"
_BRACKET = re.compile(r"\\.|[\[\]()]", re.S)


class _Parser:
    """Recursive descent over A1111's grammar. Inside a group every special character must belong to a
    construct, or the group fails and its opening bracket is plain text; at the top level a stray
    special character is plain text.

    Linear in the prompt's length: what a group parses to depends only on where it starts, so each
    bracket is parsed at most once (`_groups`) and every later attempt reuses it; a bracket without a
    properly nested partner (`_closable`) is text without being parsed; plain text is kept as slices of
    the prompt. Groups nested deeper than MAX_NESTING are not groups (their brackets stay text), which
    bounds the recursion."""

    def __init__(self, text: str):
        self.text = text
        self._closable = _closable(text)
        self._groups: dict[int, tuple | None] = {}
        self._depth = 0
        self.group_parses = 0  # brackets actually parsed (not reused): at most one per bracket

    def group(self, i: int):
        """(nodes, end) of the group opening at i, nodes () when it holds no prompt editing; or None."""
        if i in self._groups:
            return self._groups[i]
        if i not in self._closable or self._depth >= MAX_NESTING:
            return None
        self._depth += 1
        self.group_parses += 1
        try:
            found = self.bracket(i) if self.text[i] == "[" else self.paren(i)
        finally:
            self._depth -= 1
        self._groups[i] = found
        return found

    def sequence(self, i: int, stops: str, top: bool = False, pipe_is_text: bool = False) -> tuple[tuple, int]:
        """Nodes from i up to a special character that belongs to no construct (or the end)."""
        nodes: list = []
        text, size = self.text, len(self.text)
        start = i  # where the text not yet in `nodes` begins
        while i < size:
            char = text[i]
            if char == "\\":
                i += 2
                continue
            if char == "e":
                embedding = _EMBEDDING.match(text, i)
                if embedding:  # ComfyUI's embedding:NAME is text, its ":" no edit
                    i = embedding.end()
                    continue
            if char not in _SPECIAL or (char == "|" and pipe_is_text):
                i = _PLAIN.match(text, i + 1).end()
                continue
            found = self.group(i) if char in "[(" else None
            if found is not None:
                inner, end = found
                if inner:  # prompt editing inside: keep its nodes
                    if start < i:
                        nodes.append(text[start:i])
                    nodes.extend(inner)
                    start = end
                i = end
            elif char in stops or not top:
                break
            else:
                i += 1  # a stray special character at the top level is text
        i = min(i, size)
        if start < i:
            nodes.append(text[start:i])
        return tuple(nodes), i

    def paren(self, i: int):
        """(prompt) or (prompt:prompt): kept as text; only edits inside it matter here."""
        inner, j = self.sequence(i + 1, ":)")
        if j < len(self.text) and self.text[j] == ":":
            weight, j = self.sequence(j + 1, ")")
            inner = inner + (":",) + weight
        if j < len(self.text) and self.text[j] == ")":
            return (() if _is_text(inner) else ("(",) + inner + (")",)), j + 1
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
            return (() if _is_text(first) else ("[",) + first + ("]",)), j + 1
        if self.text[j] != ":":  # a group inside did not close: neither does this one
            return None
        number = _NUMBER.match(self.text, j + 1)  # [to:when]
        if number:
            return (_Edit((), first, float(number.group(1))),), number.end()
        second, j = self.sequence(j + 1, ":]")
        if j < len(self.text) and self.text[j] == ":":
            number = _NUMBER.match(self.text, j + 1)
            if number:
                return (_Edit(first, second, float(number.group(1))),), number.end()
        return None


def _is_text(nodes: tuple) -> bool:
    return all(isinstance(node, str) for node in nodes)


def _closable(text: str) -> set[int]:
    """Positions of the brackets that have a partner with only properly nested brackets between them
    (escapes skipped): the only ones that can open a group."""
    closable: set[int] = set()
    stack: list[int] = []
    for match in _BRACKET.finditer(text):
        char = match.group(0)
        if char in "[(":
            stack.append(match.start())
        elif char in ")]":
            if stack and text[stack[-1]] == ("(" if char == ")" else "["):
                closable.add(stack.pop())
            else:
                stack.clear()  # a stray closer inside would end every group still open
    return closable


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


def _render(nodes: tuple, step: int, steps: int, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        else:
            _render(_chosen(node, step, steps), step, steps, out)


def _chosen(node, step: int, steps: int) -> tuple:
    if isinstance(node, _Edit):
        return node.before if step <= _step_of(node.when, steps) else node.after
    return node.options[(step - 1) % len(node.options)]


@functools.lru_cache(maxsize=256)
def schedule(prompt: str, steps: int) -> tuple[tuple[int, str], ...]:
    """((end_at_step, text), ...): `text` is used while the sampling step (counted from 0) is at most
    `end_at_step`; the last entry ends at `steps`."""
    tree = _tree(prompt)
    thresholds, lengths = set(), set()
    for node in _walk(tree):
        if isinstance(node, _Edit):
            thresholds.add(_step_of(node.when, steps))
        elif isinstance(node, _Alternation):
            lengths.add(len(node.options))
    ends = sorted({steps} | thresholds | (set(range(1, steps + 1)) if lengths else set()))
    thresholds, lengths = sorted(thresholds), sorted(lengths)
    # Every edit and alternation chooses by which thresholds the step has passed and by the step modulo
    # its length: steps that agree on those render the same text, so it is rendered once.
    texts: dict[tuple, str] = {}
    entries = []
    for end in ends:
        choice = (bisect.bisect_left(thresholds, end), *((end - 1) % length for length in lengths))
        if choice not in texts:
            out: list[str] = []
            _render(tree, end, steps, out)
            texts[choice] = "".join(out)
        entries.append((end, texts[choice]))
    return tuple(entries)


def text_at(prompt: str, steps: int, step: int) -> str:
    """The text prompt editing selects at sampling step `step` (0-based) of `steps`."""
    entries = schedule(prompt, steps)
    return next((text for end, text in entries if step <= end), entries[-1][1])


def variants(prompt: str) -> list[str]:
    """Every text `schedule` can give for this prompt at any step count (in first-seen order), so the
    texts can be encoded before the step count is known. ValueError past MAX_VARIANTS texts or
    MAX_VARIANT_CHARS characters in all."""
    return _variants(_tree(prompt))


def _variants(nodes: tuple) -> list[str]:
    combined, pending = [""], []  # texts so far; plain text after them, joined only when needed
    for node in nodes:
        if isinstance(node, _Edit):
            options = _variants(node.before) + _variants(node.after)
        elif isinstance(node, _Alternation):
            options = [text for option in node.options for text in _variants(option)]
        else:
            options = [node]
        options = list(dict.fromkeys(options))
        if len(options) == 1:
            pending.append(options[0])
            continue
        combined = _joined(combined, "".join(pending), options)
        pending = []
    return _joined(combined, "".join(pending), [""])


def _joined(texts: list[str], middle: str, options: list[str]) -> list[str]:
    """Each text + middle + each option, deduplicated; ValueError when that is too many or too long."""
    if len(texts) == 1 and not texts[0]:
        joined = [middle + option for option in options]
    else:
        longest = max(map(len, texts)) + len(middle) + max(map(len, options))
        if len(texts) * len(options) * longest > MAX_VARIANT_CHARS:
            raise ValueError(f"prompt editing in this prompt gives more than {MAX_VARIANT_CHARS} characters "
                             "of prompts to encode")
        joined = [text + middle + option for text in texts for option in options]
    joined = list(dict.fromkeys(joined))
    if len(joined) > MAX_VARIANTS:
        raise ValueError(f"prompt editing in this prompt gives more than {MAX_VARIANTS} different prompts")
    return joined


# -- pass 2: emphasis ---------------------------------------------------------------------------------

_EMPHASIS_TOKEN = re.compile(r"""
    \\[()\[\]\\] | \\         # escaped bracket or backslash; a lone backslash
  | \( | \[                   # openers
  | :([+-]?+[.\d]++)\)        # explicit weight closing a round bracket
  | \) | \]                   # closers
  | [^\\()\[\]:]++ | :        # text
""", re.X)
_BREAK_WORD = re.compile(r"\bBREAK\b")


def emphasis(text: str) -> list[tuple[str, float]]:
    """(text, weight) segments, as A1111's parse_prompt_attention: each segment's weight is 1.0 times
    the factors of the brackets around it, in the order they close (the unclosed ones at the end: round,
    then square, outermost first), which is A1111's float arithmetic exactly.

    Linear: the first pass finds each bracket's factor and when it closes, the second computes each
    segment's weight from the two stacks of open brackets (round and square pair separately). Past
    EXACT_NESTING open brackets the factors are multiplied outermost first (the last bit may differ)."""
    tokens = [(m.group(0), m.group(1)) for m in _EMPHASIS_TOKEN.finditer(text)]
    factors: list[float] = []  # per opener, in order
    closed_at: list[float] = []  # per opener: token index of its closer; inf when it never closes
    rounds: list[int] = []
    squares: list[int] = []
    closes: list[bool] = []  # per token: it closes a bracket
    for index, (token, weight) in enumerate(tokens):
        closed = None
        if token == "(" or token == "[":
            (rounds if token == "(" else squares).append(len(factors))
            factors.append(ROUND if token == "(" else SQUARE)
            closed_at.append(math.inf)
        elif weight is not None and rounds and _is_number(weight):
            closed = rounds.pop()
            factors[closed] = float(weight)
        elif token == ")" and rounds:
            closed = rounds.pop()
        elif token == "]" and squares:
            closed = squares.pop()
        if closed is not None:
            closed_at[closed] = index
        closes.append(closed is not None)

    def weight_now() -> float:
        if len(rounds) + len(squares) > EXACT_NESTING:
            return round_products[-1] * square_products[-1]
        # A1111's order: closers as they come, then unclosed round brackets, then unclosed square ones
        order = sorted(rounds + squares, key=lambda o: (closed_at[o], o in squares, o))
        product = 1.0
        for opener in order:
            product *= factors[opener]
        return product

    segments: list[list] = []
    rounds, squares = [], []
    round_products, square_products = [1.0], [1.0]  # down each stack, outermost first
    opened, weight = 0, None  # None: the stacks changed since `weight` was computed
    for (token, _), closes_one in zip(tokens, closes):
        if token == "(" or token == "[":
            stack, products = (rounds, round_products) if token == "(" else (squares, square_products)
            stack.append(opened)
            products.append(products[-1] * factors[opened])
            opened, weight = opened + 1, None
        elif closes_one:
            for stack in ((squares, square_products) if token == "]" else (rounds, round_products)):
                stack.pop()
            weight = None
        else:
            if weight is None:
                weight = weight_now()
            if token.startswith("\\"):
                segments.append([token[1:], weight])
                continue
            # a stray closer, or ":1.2)" with no opener, is text (A1111 keeps the whole match)
            for index, part in enumerate(_split_breaks(token)):
                if index:
                    segments.append(list(BREAK))
                segments.append([part, weight])
    return _merged(segments)


def _split_breaks(token: str) -> list[str]:
    """`token` split at each BREAK, with the whitespace around each BREAK dropped."""
    parts = _BREAK_WORD.split(token) if "BREAK" in token else [token]
    last = len(parts) - 1
    return [(part.lstrip() if index else part).rstrip() if index < last else (part.lstrip() if index else part)
            for index, part in enumerate(parts)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _merged(segments: list[list]) -> list[tuple[str, float]]:
    """Neighbours of equal weight joined (BREAKs stay apart)."""
    out: list[tuple[list[str], float]] = []
    for text, weight in segments:
        if out and out[-1][1] == weight and weight != BREAK[1]:
            out[-1][0].append(text)
        else:
            out.append(([text], weight))
    return [("".join(parts), weight) for parts, weight in out] or [("", 1.0)]
