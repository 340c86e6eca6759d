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
       (word) x1.1   ((word)) x1.21   [word] /1.1   (word:1.3) or (word: 1.3) x1.3   \\( \\) \\[ \\] \\\\ literal
       BREAK            ends the current 75-token chunk (segment ("BREAK", -1.0))
   Unclosed brackets apply to the end of the prompt.

Both passes do work linear in the prompt's length, most of it inside regex calls (bench/bench_prompt_parse.py
times 1 MB prompts of bracket soup).
"""
from __future__ import annotations

import bisect
import functools
import gc
import itertools
import math
import re
from typing import NamedTuple

BREAK = ("BREAK", -1.0)
SCHEDULE_KEY = "prompt_schedule"  # Cond.extra key: (prompt, text) of a Cond that prompt editing selects
ROUND, SQUARE = 1.1, 1 / 1.1
EXACT_NESTING = 16  # emphasis weights follow A1111's float arithmetic up to this many open brackets
MAX_VARIANTS = 256  # distinct texts one prompt may schedule (each is encoded)
MAX_VARIANT_CHARS = 4_000_000  # all those texts together
MAX_NESTING = 100  # brackets nested deeper than this are text (bounds the parser's recursion)


# -- pass 1: prompt editing and alternation ------------------------------------------------------------

class _Edit(NamedTuple):
    before: tuple  # nodes shown until `when`; empty for [to:when]
    after: tuple
    when: float


class _Alternation(NamedTuple):
    options: tuple  # of node tuples


# A node is a str (text as written, escapes kept) or an _Edit / _Alternation; a sequence is a tuple.
# Text inside a group: anything but a special character, an escaped character (a lone backslash at the
# end), ComfyUI's embedding:NAME (text: its ":" starts no edit). Possessive quantifiers throughout: each
# character is looked at once, never backtracked over.
_EMBEDDING = r"embedding:[^\s\[\]():|,\\]++"
_TEXT = re.compile(rf"(?:[^\[\]():|\\e]++|\\.?|{_EMBEDDING}|e)*+", re.S)
_TEXT_OR_PIPE = re.compile(rf"(?:[^\[\]():\\e]++|\\.?|{_EMBEDDING}|e)*+", re.S)  # "|" as text too
_LEAF_TEXT = rf"(?:[^\[\]():|\\e]++|\\.|{_EMBEDDING}|e)*+"  # as _TEXT, one that cannot end the prompt
_WHEN = r"\s*+([+-]?+(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?+\d++)?+)\]"  # the step of [a:b:when]
_NUMBER = re.compile(_WHEN)
# Groups with no bracket inside, read in one match (the recursive parser reads them to the same result):
# [text]  [text|text...]  [text:when]  [text:text:when]  (text)  (text:text)
_LEAF_SQUARE = re.compile(rf"\[({_LEAF_TEXT})(?:(\])|((?:\|{_LEAF_TEXT})++)\]|:{_WHEN}|:({_LEAF_TEXT}):{_WHEN})",
                          re.S)
_LEAF_ROUND = re.compile(rf"\({_LEAF_TEXT}(?::{_LEAF_TEXT})?+\)", re.S)
_OPTION = re.compile(rf"\|({_LEAF_TEXT})", re.S)
_ESCAPED = re.compile(r"\\.", re.S)
_BRACKET_RUN = re.compile(r"([(\[]++|\)++|\]++)")  # opening brackets, or closing brackets of one kind
_UNPARSED = object()


class _Parser:
    """Recursive descent over A1111's grammar. Inside a group every special character must belong to a
    construct, or the group fails and its opening bracket is plain text; at the top level a stray
    special character is plain text.

    Linear in the prompt's length: what a group parses to depends only on where it starts, so each
    bracket is parsed at most once (`_groups`) and every later attempt reuses it; a bracket without a
    properly nested partner (`_closable`) is text without being parsed, as is one whose group failed
    (it leaves `_closable`), and the top level looks only at the brackets still there; runs of text are skipped by one regex match and kept as slices of the
    prompt; a group with no bracket inside is read by one regex match. Groups nested deeper than
    MAX_NESTING are not groups (their brackets stay text), which bounds the recursion."""

    def __init__(self, text: str):
        self.text = text
        self._closable, self._leaves = _closable(text)
        self._groups: dict[int, tuple | None] = {}
        self._depth = 0

    def top(self) -> tuple:
        """The prompt's nodes: between groups everything is text, a stray special character too."""
        text, closable, leaves, nodes = self.text, self._closable, self._leaves, []
        start = i = 0  # start: where the text not yet in `nodes` begins
        while (i := closable.find(1, i)) >= 0:
            if leaves[i]:  # as `group` reads it, without the call
                square = text[i] == "["
                leaf = (_LEAF_SQUARE if square else _LEAF_ROUND).match(text, i)
                found = (_square_leaf(leaf) if square else ((), leaf.end())) if leaf else self.group(i)
            else:
                found = self.group(i)
            if found is None:
                i += 1
                continue
            inner, end = found
            if inner:  # prompt editing inside: keep its nodes
                if start < i:
                    nodes.append(text[start:i])
                nodes.extend(inner)
                start = end
            i = end
        if start < len(text):
            nodes.append(text[start:])
        return tuple(nodes)

    def group(self, i: int):
        """(nodes, end) of the group opening at i, nodes () when it holds no prompt editing; or None."""
        found = self._groups.get(i, _UNPARSED)
        if found is not _UNPARSED:
            return found
        if not self._closable[i] or self._depth >= MAX_NESTING:
            return None
        square = self.text[i] == "["
        # a group with no bracket inside: one regex match, not kept (it is asked for again at most by
        # the top level, after the group around it failed, and it reads the same at any depth)
        if self._leaves[i]:
            leaf = (_LEAF_SQUARE if square else _LEAF_ROUND).match(self.text, i)
            if leaf:
                return _square_leaf(leaf) if square else ((), leaf.end())
        self._depth += 1  # (an exception ends the whole parse: no need to restore it)
        found = self.bracket(i) if square else self.paren(i)
        self._depth -= 1
        if found is None:  # a bracket that cannot open a group: text, and the top level skips it
            self._closable[i] = 0
        else:
            self._groups[i] = found
        return found

    def sequence(self, i: int, pipe_is_text: bool = False) -> tuple[tuple, int]:
        """Nodes from i up to the first special character that is not a group (or the end)."""
        nodes: list = []
        text, size = self.text, len(self.text)
        skip_text = (_TEXT_OR_PIPE if pipe_is_text else _TEXT).match
        start = i  # where the text not yet in `nodes` begins
        while (i := skip_text(text, i).end()) < size and text[i] in "[(":
            found = self.group(i)
            if found is None:
                break
            inner, end = found
            if inner:  # prompt editing inside: keep its nodes
                if start < i:
                    nodes.append(text[start:i])
                nodes.extend(inner)
                start = end
            i = end
        if start < i:
            nodes.append(text[start:i])
        return tuple(nodes), i

    def paren(self, i: int):
        """(prompt) or (prompt:prompt): kept as text; only edits inside it matter here."""
        inner, j = self.sequence(i + 1)
        if j < len(self.text) and self.text[j] == ":":
            weight, j = self.sequence(j + 1)
            inner = inner + (":",) + weight
        if j < len(self.text) and self.text[j] == ")":
            return (() if _is_text(inner) else ("(",) + inner + (")",)), j + 1
        return None

    def bracket(self, i: int):
        first, j = self.sequence(i + 1)
        if j < len(self.text) and self.text[j] == "|":
            options = [first]
            while j < len(self.text) and self.text[j] == "|":
                option, j = self.sequence(j + 1)
                options.append(option)
            if j < len(self.text) and self.text[j] == "]":
                return (_Alternation(tuple(options)),), j + 1
            # not an alternation: A1111 then reads its "|" as text ("[{b|d{:.5]" is an edit)
            first, j = self.sequence(i + 1, pipe_is_text=True)
        if j >= len(self.text):
            return None
        if self.text[j] == "]":  # [prompt]: de-emphasis, kept as text
            return (() if _is_text(first) else ("[",) + first + ("]",)), j + 1
        if self.text[j] != ":":  # a group inside did not close: neither does this one
            return None
        number = _NUMBER.match(self.text, j + 1)  # [to:when]
        if number:
            return (_Edit((), first, float(number.group(1))),), number.end()
        second, j = self.sequence(j + 1)
        if j < len(self.text) and self.text[j] == ":":
            number = _NUMBER.match(self.text, j + 1)
            if number:
                return (_Edit(first, second, float(number.group(1))),), number.end()
        return None


def _square_leaf(leaf: re.Match) -> tuple:
    """(nodes, end) of a [...] group with no bracket inside, from its _LEAF_SQUARE match."""
    first, closed, options, to_when, second, when = leaf.groups()
    if closed:
        return (), leaf.end()
    first_nodes = (first,) if first else ()
    if options:
        texts = options[1:].split("|") if "\\" not in options else _OPTION.findall(options)  # "\\|" is text
        nodes = _Alternation((first_nodes, *[(text,) if text else () for text in texts]))
    elif to_when:
        nodes = _Edit((), first_nodes, float(to_when))
    else:
        nodes = _Edit(first_nodes, (second,) if second else (), float(when))
    return (nodes,), leaf.end()


def _is_text(nodes: tuple) -> bool:
    return all(isinstance(node, str) for node in nodes)


def _closable(text: str) -> tuple[bytearray, bytearray]:
    """Per character: 1 at the brackets that have a partner with only properly nested brackets between
    them (escapes skipped), the only ones that can open a group; and 1 at those of them with no bracket
    at all before their partner. The runs of brackets and where they start come from regex calls, and
    a run is handled by list operations: Python looks at each run, not each bracket."""
    plain = _ESCAPED.sub("__", text) if "\\" in text else text  # same length, escapes hide their brackets
    pieces = _BRACKET_RUN.split(plain)  # text, run, text, run, ..., text
    run_starts = itertools.islice(itertools.accumulate(map(len, pieces)), 0, None, 2)
    closable, leaves = bytearray(len(text)), bytearray(len(text))
    positions: list[int] = []  # the open brackets, innermost last
    kinds: list[str] = []
    after_opening = False  # the last run was of opening brackets: the next closer's partner is a leaf
    for run, start in zip(pieces[1::2], run_starts):
        first = run[0]
        if first == "(" or first == "[":
            if len(run) == 1:
                positions.append(start)
                kinds.append(first)
            else:
                positions += range(start, start + len(run))
                kinds += run
            after_opening = True
            continue
        opener, count = ("(" if first == ")" else "["), len(run)
        if count == 1:
            if kinds and kinds[-1] == opener:
                position = positions.pop()
                kinds.pop()
                closable[position], leaves[position] = 1, after_opening
            else:
                positions.clear()
                kinds.clear()
            after_opening = False
            continue
        closing = 0  # the closers before the first that meets no partner close; that one ends every group
        if count <= len(kinds) and kinds[len(kinds) - count:].count(opener) == count:
            closing = count
        else:
            while closing < len(kinds) and kinds[len(kinds) - 1 - closing] == opener:
                closing += 1
        if closing:
            for position in positions[len(positions) - closing:]:
                closable[position] = 1
            leaves[positions[-1]] = after_opening
        if closing == count:
            del positions[len(positions) - count:], kinds[len(kinds) - count:]
        else:
            positions.clear()
            kinds.clear()
        after_opening = False
    return closable, leaves


def _collector_paused(function):
    """Run `function` with the cyclic garbage collector paused: parsing a long prompt makes many small
    tuples and lists that all live until it returns, which the collector would otherwise scan again and
    again for nothing (a third of the time on 1 MB of brackets). Another thread may resume it early."""
    @functools.wraps(function)
    def paused(*args):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args)
        finally:
            if enabled:
                gc.enable()
    return paused


@functools.lru_cache(maxsize=256)
@_collector_paused
def _tree(prompt: str) -> tuple:
    return _Parser(prompt).top()


def _choices(nodes: tuple) -> tuple[list[float], list[int]]:
    """The `when` of every edit and the length of every alternation in the tree."""
    whens, lengths, pending = [], [], [nodes]
    while pending:
        for node in pending.pop():
            if isinstance(node, str):
                continue
            if isinstance(node, _Edit):
                whens.append(node.when)
                pending += (node.before, node.after)
            else:
                lengths.append(len(node.options))
                pending += node.options
    return whens, lengths


def _step_of(when: float, steps: int) -> int:
    return min(steps, int(when * steps if when < 1 else when))


def _render(nodes: tuple, step: int, steps: int, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
            continue
        if isinstance(node, _Edit):
            chosen = node.before if step <= _step_of(node.when, steps) else node.after
        else:
            chosen = node.options[(step - 1) % len(node.options)]
        for part in chosen:  # most edits hold text: no call deeper
            if isinstance(part, str):
                out.append(part)
            else:
                _render((part,), step, steps, out)


@functools.lru_cache(maxsize=256)
def schedule(prompt: str, steps: int) -> tuple[tuple[int, str], ...]:
    """((end_at_step, text), ...): `text` is used while the sampling step (counted from 0) is at most
    `end_at_step`; the last entry ends at `steps`."""
    tree = _tree(prompt)
    whens, lengths = _choices(tree)
    ends = sorted({steps} | {_step_of(when, steps) for when in whens} | set(range(1, steps + 1) if lengths else ()))
    # Every edit and alternation chooses by which thresholds the step has passed and by the step modulo
    # its length: steps that agree on those render the same text, so it is rendered once. When that is
    # still many renders, only the ones whose choice changes the text count (`_simplified`): a prompt of
    # many alternations whose options read the same is rendered once, not at every step.
    choices = _choices_by_step(whens, lengths, ends, steps)
    if len(set(choices)) > 8:
        tree = _simplified(tree)
        choices = _choices_by_step(*_choices(tree), ends, steps)
    texts: dict[tuple, str] = {}
    same_texts: dict[str, str] = {}  # one string per distinct text, however many steps show it
    entries = []
    for end, choice in zip(ends, choices):
        if choice not in texts:
            out: list[str] = []
            _render(tree, end, steps, out)
            text = "".join(out)
            texts[choice] = same_texts.setdefault(text, text)
        entries.append((end, texts[choice]))
    return tuple(entries)


def _choices_by_step(whens: list[float], lengths: list[int], ends: list[int], steps: int) -> list[tuple]:
    """Per step in `ends`: what decides the text there (which edit thresholds it has passed, the step
    modulo each alternation's length), from the tree's `_choices`."""
    thresholds, lengths = sorted({_step_of(when, steps) for when in whens}), sorted(set(lengths))
    return [(bisect.bisect_left(thresholds, end), *((end - 1) % length for length in lengths)) for end in ends]


def _simplified(nodes: tuple) -> tuple:
    """The tree with each edit and alternation whose every side is the same plain text replaced by that
    text (it renders the same at every step); `nodes` itself when there is none."""
    if _is_text(nodes):
        return nodes
    out: list = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
            continue
        old_sides = (node.before, node.after) if isinstance(node, _Edit) else node.options
        sides = tuple(_simplified(side) for side in old_sides)
        if all(_is_text(side) for side in sides) and len({"".join(side) for side in sides}) == 1:
            out.append("".join(sides[0]))
        elif all(side is old for side, old in zip(sides, old_sides)):
            out.append(node)
        else:
            out.append(_Edit(*sides, node.when) if isinstance(node, _Edit) else _Alternation(sides))
    return tuple(out)


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

_WEIGHT_TOKEN = r":\s*+[+-]?+[.\d]++\s*+\)"  # ":1.2)" or ": 1.2 )", an explicit weight closing a round bracket
_NEGATIVE_WEIGHT = re.compile(r":\s*+-")
_ESCAPE = r"\\[()\[\]\\]?+"  # an escaped bracket or backslash; a lone backslash
# Runs of opening brackets, runs of one closing bracket, and runs of text (a colon that starts no
# explicit weight is text too, so "a:b" is one token): a long soup of brackets is a few tokens.
_EMPHASIS_TOKEN = re.compile(rf"{_ESCAPE} | [(\[]++ | \)++ | \]++ | {_WEIGHT_TOKEN}"
                             rf" | (?: [^\\()\[\]:]++ | :(?!{_WEIGHT_TOKEN[1:]}) )++", re.X)
# A1111's own tokens ("a", ":", "b", one bracket each): used when a negative weight may make a segment's
# weight exactly -1.0, since such segments are never joined and A1111's tokens then show
_EMPHASIS_TOKEN_A1111 = re.compile(rf"{_ESCAPE} | [()\[\]] | {_WEIGHT_TOKEN} | [^\\()\[\]:]++ | :", re.X)
_BREAK_WORD = re.compile(r"\bBREAK\b")


@_collector_paused
def emphasis(text: str) -> list[tuple[str, float]]:
    """(text, weight) segments, as A1111's parse_prompt_attention: each segment's weight is 1.0 times
    the factors of the brackets around it, in the order they close (the unclosed ones at the end: round,
    then square, outermost first), which is A1111's float arithmetic exactly.

    Linear, in one pass over the tokens of one regex: each opening bracket becomes a node (the open
    bracket of its kind around it, its factor, when it closed; round and square ones apart, since each
    kind closes its own), a run of opening brackets in a few list operations; each run of text becomes
    a segment that remembers the innermost open round and square bracket, and text under the same open
    brackets joins the segment before it. Then each segment's weight follows from its two chains of
    brackets. Past EXACT_NESTING open brackets the factors are multiplied outermost first (the last bit
    may differ from A1111). All is kept in flat lists of numbers and strings, which the garbage
    collector need not scan."""
    exact_tokens = _NEGATIVE_WEIGHT.search(text) is not None  # only a negative weight can give -1.0
    tokens = (_EMPHASIS_TOKEN_A1111 if exact_tokens else _EMPHASIS_TOKEN).findall(text)
    # per opening bracket, node 0 standing for "none": the open one of its kind around it; the factor
    # of round ones (square ones are all SQUARE); how many brackets closed before it
    round_parent, round_factor, square_parent = [0], [1.0], [0]
    round_closed: dict[int, int] = {}
    square_closed: dict[int, int] = {}
    round_top = square_top = 0
    opened = closes = 0  # brackets open now; brackets closed so far
    pieces: list[str] = []  # the text of every segment, in order
    starts: list[int] = []  # per segment: its first piece; a BREAK segment is the piece "BREAK"
    rounds: list[int] = []  # per segment: the innermost open round bracket; -1 for a BREAK
    squares: list[int] = []  # per segment: the innermost open square bracket
    nesting: list[int] = []  # per segment: how many brackets are open around it
    joinable = False  # the last segment may take more text (same open brackets, not a BREAK)
    for token in tokens:
        first = token[0]
        if token == "(":
            round_parent.append(round_top)
            round_factor.append(ROUND)
            round_top = len(round_parent) - 1
            opened, joinable = opened + 1, False
            continue
        if token == "[":
            square_parent.append(square_top)
            square_top = len(square_parent) - 1
            opened, joinable = opened + 1, False
            continue
        if first == "(" or first == "[":  # a run of them: each new one inside the one before it
            count = token.count("(")
            if count:
                base = len(round_parent)
                round_parent.append(round_top)
                round_parent += range(base, base + count - 1)
                round_factor += [ROUND] * count
                round_top = base + count - 1
            if len(token) > count:
                base, count = len(square_parent), len(token) - count
                square_parent.append(square_top)
                square_parent += range(base, base + count - 1)
                square_top = base + count - 1
            opened, joinable = opened + len(token), False
            continue
        if first == ")" or first == "]":
            count = len(token)
            if first == ")":
                while count and round_top:
                    round_closed[round_top], closes, count = closes, closes + 1, count - 1
                    round_top = round_parent[round_top]
            else:
                while count and square_top:
                    square_closed[square_top], closes, count = closes, closes + 1, count - 1
                    square_top = square_parent[square_top]
            if count < len(token):
                opened -= len(token) - count
                joinable = False
            if not count:
                continue
            token = first * count  # the ones that close nothing are text
        elif first == ":" and token[-1] == ")" and round_top and _is_number(token[1:-1]):
            round_factor[round_top] = float(token[1:-1])
            round_closed[round_top], closes, opened, joinable = closes, closes + 1, opened - 1, False
            round_top = round_parent[round_top]
            continue
        # text: a stray closer, or ":1.2)" with no opener, too (A1111 keeps the whole match)
        if first == "\\":
            token = token[1:]
        elif "BREAK" in token:
            parts = _split_breaks(token)
            for part in parts[:-1]:  # each BREAK ends the segment before it and is one of its own
                if not joinable:
                    starts.append(len(pieces))
                    rounds.append(round_top)
                    squares.append(square_top)
                    nesting.append(opened)
                pieces.append(part)
                starts.append(len(pieces))
                pieces.append(BREAK[0])
                rounds.append(-1)
                squares.append(0)
                nesting.append(0)
                joinable = False
            token = parts[-1]
        if not joinable:
            starts.append(len(pieces))
            rounds.append(round_top)
            squares.append(square_top)
            nesting.append(opened)
            joinable = not exact_tokens
        pieces.append(token)

    starts.append(len(pieces))
    exact = _ExactWeights(round_parent, round_factor, round_closed, square_parent, square_closed)
    if nesting and max(nesting) > EXACT_NESTING:
        round_products = _products(round_parent, round_factor)
        square_products = _products(square_parent, [SQUARE] * len(square_parent))
    out: list[tuple[str, float]] = []
    run_start, run_weight = 0, None  # neighbours of equal weight are joined; BREAKs stay apart
    for index, (round_top, square_top, opened) in enumerate(zip(rounds, squares, nesting)):
        if round_top < 0:
            weight = BREAK[1]
        elif opened <= 1:  # 1.0 times the one factor, if any
            weight = round_factor[round_top] if round_top else SQUARE if square_top else 1.0
        elif opened > EXACT_NESTING:
            weight = round_products[round_top] * square_products[square_top]
        else:
            weight = exact.of(round_top, square_top)
        if weight != run_weight or weight == BREAK[1]:
            if index:
                out.append(("".join(pieces[run_start:starts[index]]), run_weight))
            run_start, run_weight = starts[index], weight
    if rounds:
        out.append(("".join(pieces[run_start:]), run_weight))
    return out or [("", 1.0)]


class _ExactWeights:
    """Weights of text under at most EXACT_NESTING brackets: the factors of the brackets around it
    multiplied in the order they close, remembered per innermost round and square bracket."""

    def __init__(self, round_parent: list[int], round_factor: list[float], round_closed: dict[int, int],
                 square_parent: list[int], square_closed: dict[int, int]):
        self.round_parent, self.round_factor, self.round_closed = round_parent, round_factor, round_closed
        self.square_parent, self.square_closed = square_parent, square_closed
        self.known: dict[tuple[int, int], float] = {}

    def of(self, round_top: int, square_top: int) -> float:
        weight = self.known.get((round_top, square_top))
        if weight is None:
            # (when it closed, kind, node) orders them as A1111 multiplies: as they close, then the
            # ones still open at the end, round ones first, outermost (created first) first
            around = []
            top = round_top
            while top:
                around.append((self.round_closed.get(top, math.inf), 0, top, self.round_factor[top]))
                top = self.round_parent[top]
            top = square_top
            while top:
                around.append((self.square_closed.get(top, math.inf), 1, top, SQUARE))
                top = self.square_parent[top]
            weight = 1.0
            for *_, factor in sorted(around):
                weight *= factor
            self.known[round_top, square_top] = weight
        return weight


def _products(parent: list[int], factor: list[float]) -> list[float]:
    """Per bracket: the factors of its chain (itself and the open brackets of its kind around it)
    multiplied outermost first."""
    products = [1.0] * len(parent)
    for node in range(1, len(products)):
        products[node] = products[parent[node]] * factor[node]
    return products


def _split_breaks(token: str) -> list[str]:
    """`token` split at each BREAK, with the whitespace around each BREAK dropped."""
    parts = _BREAK_WORD.split(token)
    last = len(parts) - 1
    return [(part.lstrip() if index else part).rstrip() if index < last else (part.lstrip() if index else part)
            for index, part in enumerate(parts)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
