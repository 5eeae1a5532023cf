"""The one cleaning function for text typed by people (issue 16, item 2): properties over any input."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.text import BIDI_CONTROLS, ZERO_WIDTH, clean_input, one_line

HOSTILE = ("Rotate the payroll secret\r\n\x1b[31mred\x1b[0m\x07\x08\u202eevil\u202c zero\u200bwidth\u2060\tend"
           "\u2028next\x00\ue000\U000e0041")
texts = st.one_of(st.text(max_size=300), st.just(HOSTILE),
                  st.lists(st.sampled_from(["a", "é", "e\u0301", "\n", "\r", "\r\n", "\x1b", "\u202e", "\u200d",
                                            " ", "\t", "[code]", "\u2028", "\x85", "\x08"]), max_size=40).map("".join))


def forbidden(ch: str, multiline: bool) -> bool:
    if ch == "\n":
        return not multiline
    return (ch in BIDI_CONTROLS or ch in ZERO_WIDTH or ch == "\t"
            or unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"})


@settings(max_examples=500, deadline=None)
@given(texts, st.one_of(st.none(), st.integers(1, 200)), st.booleans())
def test_cleaned_text_has_no_control_bidi_or_invisible_characters_and_is_stable(text, limit, multiline):
    cleaned = clean_input(text, limit, multiline=multiline)
    assert not [ch for ch in cleaned if forbidden(ch, multiline)], ascii(cleaned)
    assert clean_input(cleaned, limit, multiline=multiline) == cleaned
    assert limit is None or len(cleaned) <= limit
    assert cleaned == cleaned.strip()


def test_the_hostile_example():
    assert clean_input(HOSTILE) == "Rotate the payroll secret\n[31mred[0mevil zerowidth end\nnext"
    assert one_line(HOSTILE) == "Rotate the payroll secret [31mred[0mevil zerowidth end next"
    assert one_line(None) == ""
