"""PEFT pattern keys matched in linear time: the same answers as `re`, without its backtracking."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colora.core.interop.pattern_keys import UnsupportedPattern, key_matcher

ATOMS = ["a", "b", ".", r"\.", r"\d", r"\w", "[ab]", "[^a]", "[0-9_]", "x", r"\D"]
QUANTIFIERS = ["", "", "*", "+", "?", "{0,2}", "{1,3}", "*?", "{2}"]


@st.composite
def keys(draw, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 2 and draw(st.booleans()):
            alternatives = draw(st.lists(keys(depth + 1), min_size=1, max_size=3))
            atom = "(" + "|".join(alternatives) + ")"
        else:
            atom = draw(st.sampled_from(ATOMS))
        parts.append(atom + draw(st.sampled_from(QUANTIFIERS)))
    anchor = draw(st.sampled_from(["", "", "^", r"\b"]))
    return anchor + "".join(parts) + draw(st.sampled_from(["", "", "$", r"\b"]))


@settings(max_examples=600, deadline=None)
@given(keys(), st.text("ab.1x_\n", max_size=12))
def test_the_matcher_agrees_with_re(key, path):
    expected = re.match(rf"(.*\.)?({key})$", path) is not None
    assert key_matcher(key)(path) == expected


@pytest.mark.parametrize(
    "key",
    [".*" * 40 + "!", "(a|.)*" * 12 + "!", "(.*)*(.*)*!", "(.?){30}" + "." * 30 + "!", r"(\w+\.?)+!"],
)
def test_backtracking_bombs_answer_at_once(key):
    path = "decoders.3.blocks.1.conv1" * 4
    started = time.monotonic()
    assert key_matcher(key)(path) is False
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("key", [r"(conv)\1", "(?=conv)conv1", "(?i:CONV1)", "x{1,4000}", "(?>a*)b"])
def test_constructs_without_a_linear_meaning_are_refused(key):
    with pytest.raises(UnsupportedPattern):
        key_matcher(key)


def test_plain_layer_names_keep_peft_s_suffix_rule():
    match = key_matcher("blocks.1.conv1")
    assert match("decoders.3.blocks.1.conv1") and match("blocks.1.conv1")
    assert not match("decoders.3.xblocks.1.conv1") and not match("blocks.1.conv12")
