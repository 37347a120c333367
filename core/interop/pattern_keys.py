"""PEFT's pattern-key rule, in time linear in the layer path whatever the pattern.

PEFT picks a layer's rank or alpha by the first key of `rank_pattern` / `alpha_pattern` for which
`re.match(rf"(.*\\.)?({key})$", path)` succeeds (peft.utils.other.get_pattern_key). Keys come from
an untrusted file, and Python's backtracking `re` takes polynomial or exponential time on keys
like `.*.*.*...!` (minutes per layer, deaf to Ctrl-C). So a key with any choice in it (a repeat
or an alternative) runs here as a Thompson NFA over the key's own parse (the same language as
`re`, no backtracking: O(len(path) x states)); a plain key (characters, classes, anchors) stays
with `re` (at most quadratic, in C). Constructs outside both (back-references, look-arounds,
inline flags, possessive or atomic groups) are refused.

    match = key_matcher("encoders\\.\\d+\\.conv1")
    match("encoders.3.conv1")   # True, as re would say
"""

from __future__ import annotations

import re
from typing import Callable

try:  # the regex parser behind `re` (sre_parse before Python 3.11)
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants
    import sre_parse

C = sre_constants
MAX_STATES = 4000  # counted repeats are unrolled; a key that unrolls further is refused
_REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT}


class UnsupportedPattern(ValueError):
    """A key with a construct that has no linear-time meaning here."""


def key_matcher(key: str) -> Callable[[str], bool]:
    """`path -> bool`, exactly `re.match(rf"(.*\\.)?({key})$", path) is not None`
    (re.error or UnsupportedPattern for keys colora does not read)."""
    pattern = rf"(.*\.)?({key})$"
    compiled = re.compile(pattern)  # raises re.error for an invalid key
    tree = sre_parse.parse(pattern)
    if _plain(sre_parse.parse(key)):
        return lambda path: compiled.match(path) is not None
    nfa = _Nfa()
    start = nfa.sequence(list(tree), nfa.add(("match",)))
    return lambda path: nfa.run(start, path)


def _plain(items) -> bool:
    """Characters, classes, anchors and flag-free groups only: nothing `re` could backtrack into."""
    for op, av in items:
        if op == C.SUBPATTERN:
            if av[1] or av[2] or not _plain(av[-1]):
                return False
        elif op not in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN, C.AT):
            return False  # a repeat or an alternative, or a construct the NFA will refuse
    return True


class _Nfa:
    """States: ("char", test, next), ("split", nexts), ("assert", at, next), ("match",)."""

    def __init__(self) -> None:
        self.states: list[tuple] = []

    def add(self, state: tuple) -> int:
        if len(self.states) >= MAX_STATES:
            raise UnsupportedPattern(f"the pattern unrolls to more than {MAX_STATES} states")
        self.states.append(state)
        return len(self.states) - 1

    def sequence(self, items: list, then: int) -> int:
        for op, av in reversed(items):  # built back to front: each item continues into `then`
            then = self.item(op, av, then)
        return then

    def item(self, op, av, then: int) -> int:
        if op in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
            return self.add(("char", _char_test(op, av), then))
        if op == C.SUBPATTERN:
            _group, add_flags, del_flags, body = av
            if add_flags or del_flags:
                raise UnsupportedPattern("inline flags like (?i:...)")
            return self.sequence(list(body), then)
        if op == C.BRANCH:
            return self.add(("split", tuple(self.sequence(list(alt), then) for alt in av[1])))
        if op in _REPEATS:
            low, high, body = av
            return self.repeat(int(low), None if high == C.MAXREPEAT else int(high), list(body), then)
        if op == C.AT:
            return self.add(("assert", av, then))
        raise UnsupportedPattern(f"the construct {str(op).lower()}")

    def repeat(self, low: int, high: int | None, body: list, then: int) -> int:
        # the optional tail first (built back to front), then `low` mandatory copies before it
        if high is None:
            loop = self.add(("split", ()))  # patched below: the loop's entry needs its own index
            self.states[loop] = ("split", (self.sequence(body, loop), then))
            tail = loop
        else:
            tail = then
            for _ in range(high - low):
                tail = self.add(("split", (self.sequence(body, tail), then)))
                then = tail
        for _ in range(low):
            tail = self.sequence(body, tail)
        return tail

    def run(self, start: int, path: str) -> bool:
        """Anchored at 0 like re.match; succeeds when the match state is reachable at any point."""
        current = self._closure({start}, path, 0)
        for pos, ch in enumerate(path):
            if any(self.states[s][0] == "match" for s in current):
                return True
            moved = {self.states[s][2] for s in current if self.states[s][0] == "char" and self.states[s][1](ch)}
            if not moved:
                return False
            current = self._closure(moved, path, pos + 1)
        return any(self.states[s][0] == "match" for s in current)

    def _closure(self, states: set[int], path: str, pos: int) -> set[int]:
        seen, stack = set(), list(states)
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            state = self.states[s]
            if state[0] == "split":
                stack.extend(state[1])
            elif state[0] == "assert" and _at(state[1], path, pos):
                stack.append(state[2])
        return {s for s in seen if self.states[s][0] in ("char", "match")}


def _at(where, path: str, pos: int) -> bool:
    n = len(path)
    if where in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):
        return pos == 0  # no MULTILINE: ^ is the string's start
    if where == C.AT_END:  # `$`: the end, or just before a final newline
        return pos == n or (pos == n - 1 and path[-1] == "\n")
    if where == C.AT_END_STRING:
        return pos == n
    if where in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY):
        before = pos > 0 and _is_word(path[pos - 1])
        after = pos < n and _is_word(path[pos])
        return (before != after) == (where == C.AT_BOUNDARY)
    raise UnsupportedPattern(f"the anchor {str(where).lower()}")


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


_CATEGORIES = {
    C.CATEGORY_DIGIT: lambda ch: ch.isdecimal(),
    C.CATEGORY_NOT_DIGIT: lambda ch: not ch.isdecimal(),
    C.CATEGORY_WORD: _is_word,
    C.CATEGORY_NOT_WORD: lambda ch: not _is_word(ch),
    C.CATEGORY_SPACE: lambda ch: ch.isspace(),
    C.CATEGORY_NOT_SPACE: lambda ch: not ch.isspace(),
}


def _char_test(op, av) -> Callable[[str], bool]:
    if op == C.LITERAL:
        return lambda ch, c=chr(av): ch == c
    if op == C.NOT_LITERAL:
        return lambda ch, c=chr(av): ch != c
    if op == C.ANY:
        return lambda ch: ch != "\n"  # no DOTALL
    negate = bool(av) and av[0][0] == C.NEGATE
    tests = []
    for kind, value in av[1:] if negate else av:
        if kind == C.LITERAL:
            tests.append(lambda ch, c=chr(value): ch == c)
        elif kind == C.RANGE:
            tests.append(lambda ch, lo=value[0], hi=value[1]: lo <= ord(ch) <= hi)
        elif kind == C.CATEGORY and value in _CATEGORIES:
            tests.append(_CATEGORIES[value])
        else:
            raise UnsupportedPattern(f"the character class item {str(kind).lower()}")
    return lambda ch: any(t(ch) for t in tests) != negate
