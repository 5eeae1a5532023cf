from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cards.text import BIDI_CONTROLS, ZERO_WIDTH, input_value, plain_line, safe_line, safe_text
from tests.unit.cards.helpers import text_links

HOSTILE = "[APPROVED](https://evil.example) ![x](https://evil.example/p.png) \u202egnp.exe \u200b<b>hi</b>"

# Fragments that like to combine into markdown, URLs and invisible tricks.
FRAGMENTS = [
    "[", "]", "(", ")", "![", "](", "][", "]:", "!", "\\", "*", "_", "`", "~", "#", "-", "+", ">", "<", "|",
    "{{", "}}", "{", "}", ".", "1.", "2)", "&", "&#x202e;", "&#58;", "&colon;", "://", ":", "/", "//",
    "http", "https", "HTTPS", "www", "www.", "WWW.", "mailto:", "javascript:", "evil", "example", "com", "io",
    ".com", "@", "\n", "\r\n", "\t", " ", "    ", "\u2028", "\x85", "\x00", "\x1b", "\u202e", "\u2066", "\u200b",
    "\u200f", "\u061c", "\ufeff", "\u2060", "\ue000", "\ue001", "ｈｔｔｐｓ：／／", "．", "＠", "\uff3b", "\uff3d",
    "\U000e0041", "\ud800", "a", "Z", "9", "é", "e\u0301", "…",
]
tricky_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=60).map("".join)
any_text = st.one_of(tricky_text, st.text(max_size=400))


def invisible(value: str) -> set[str]:
    return {ch for ch in value if ch in BIDI_CONTROLS or ch in ZERO_WIDTH or unicodedata.category(ch) == "Cf"}


def check_safe(out: str, limit: int) -> None:
    assert len(out) <= limit
    assert text_links(out) == [], out
    assert "://" not in out
    assert not invisible(out)
    assert not any(unicodedata.category(ch) in {"Cs", "Co", "Cn"} for ch in out)
    assert all(ch == "\n" or unicodedata.category(ch) != "Cc" for ch in out)


@settings(max_examples=400)
@given(value=any_text, limit=st.integers(min_value=1, max_value=300))
def test_safe_text_output_is_inert_and_capped(value: str, limit: int) -> None:
    check_safe(safe_text(value, limit), limit)


@settings(max_examples=400)
@given(value=any_text, limit=st.integers(min_value=1, max_value=200))
def test_safe_line_output_is_inert_single_line_and_capped(value: str, limit: int) -> None:
    out = safe_line(value, limit)
    check_safe(out, limit)
    assert "\n" not in out


@given(value=any_text, limit=st.integers(min_value=1, max_value=200))
def test_plain_line_is_clean_and_capped(value: str, limit: int) -> None:
    out = plain_line(value, limit)
    assert len(out) <= limit and "\n" not in out and "://" not in out and not invisible(out)


@given(value=any_text)
def test_input_value_keeps_text_but_drops_invisibles(value: str) -> None:
    out = input_value(value, 2000)
    assert len(out) <= 2000 and not invisible(out)


def test_hostile_example_is_defanged_and_escaped() -> None:
    out = safe_text(HOSTILE)
    assert out == ("\\[APPROVED\\]\\(https[:]//evil[.]example) \\!\\[x\\]\\(https[:]//evil[.]example/p.png) "
                   "gnp.exe \\<b>hi\\</b>")


@pytest.mark.parametrize(("raw", "expected"), [
    ("https://evil.example/x", "https[:]//evil[.]example/x"),
    ("see www.evil.com/login", "see www[.]evil[.]com/login"),
    ("WWW.Evil.Com", "WWW[.]Evil[.]Com"),
    ("mailto:boss@contoso.com", "mailto[:]boss@contoso[.]com"),
    ("javascript:alert(1)", "javascript[:]alert(1)"),
    ("bit.ly/abc", "bit[.]ly/abc"),
    ("ｈｔｔｐｓ：／／ｅｖｉｌ．ｃｏｍ", "https[:]//evil[.]com"),  # full-width forms are NFKC-folded first
    ("https:\u200b//evil.com", "https[:]//evil[.]com"),  # a zero-width space does not hide the scheme
    ("a://b://c", "a[:]//b[:]//c"),
])
def test_urls_are_defanged(raw: str, expected: str) -> None:
    assert safe_line(raw) == expected


@pytest.mark.parametrize("raw", [
    "Restore the Exchange connector after INC0012345 broke mail flow.",
    "Reset MFA for user e.g. after phone loss, i.e. re-register.",
    "Update config.yaml and the v1.2 policy (step 3 of 5).",
    "Dana Whitfield",
    "snake_case_name",
    "R&D team, 3 < 4",
])
def test_ordinary_text_is_left_alone(raw: str) -> None:
    assert safe_text(raw) == raw


@pytest.mark.parametrize(("raw", "expected"), [
    ("**bold** _it_", "\\*\\*bold\\*\\* \\_it\\_"),
    ("# Heading", "\\# Heading"),
    ("- item\n+ item\n> quote", "\\- item\n\\+ item\n\\> quote"),
    ("1. one\n2) two", "1\\. one\n2\\) two"),
    ("`code` ~~strike~~ a|b", "\\`code\\` \\~\\~strike\\~\\~ a\\|b"),
    ("{{DATE(2026-11-23T13:00:00Z, SHORT)}}", "\\{\\{DATE(2026-11-23T13:00:00Z, SHORT)\\}\\}"),
    ("&#x202e;evil", "\\&#x202e;evil"),
    ("<at>Dana</at>", "\\<at>Dana\\</at>"),
    ("C:\\temp", "C:\\\\temp"),
    ("[ref]: x", "\\[ref\\]: x"),
    ("    indented code", "indented code"),
])
def test_markdown_is_escaped_where_it_could_form_syntax(raw: str, expected: str) -> None:
    assert safe_text(raw) == expected


def test_bidi_zero_width_and_controls_are_dropped() -> None:
    raw = "a\u202eb\u2066c\u2069d\u200ee\u200ff\u061cg\u200bh\u200ci\u200dj\u2060k\ufeffl\x00m\x1bn\x7fo"
    assert safe_text(raw) == "abcdefghijklmno"


def test_safe_line_folds_newlines_and_whitespace() -> None:
    assert safe_line("one\ntwo\r\nthree\u2028four\tfive   six") == "one two three four five six"


def test_safe_text_keeps_paragraphs_but_not_runs_of_blank_lines() -> None:
    assert safe_text("one\n\n\n\n\ntwo\r\nthree") == "one\n\ntwo\nthree"


def test_length_cap_adds_ellipsis_and_never_splits_an_escape() -> None:
    assert safe_line("x" * 200, 10) == "x" * 9 + "…"
    assert safe_line("a" * 7 + "[[[[", 9) == "a" * 7 + "…"  # not "aaaaaaa\\…"
    assert safe_line("ab https://evil.example", 10) == "ab https…"  # not "ab https[:…"
    assert safe_line("ab https://evil.example", 12) == "ab https[:]…"


def test_huge_input_is_capped_and_marked() -> None:
    out = safe_text(HOSTILE + " lorem https://evil.example/x" * 4000, 1000)
    assert len(out) <= 1000 and out.endswith("…")
    out = safe_text("\u200b" * 100_000 + "hidden tail", 50)
    assert out == "…"  # the tail was beyond what we read: say so rather than show a clean-looking value


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        safe_text("x", 0)


def test_input_value_keeps_markdown_and_urls_for_the_users_own_input() -> None:
    raw = "Fix [x](https://a.example)\nline two\u202e"
    assert input_value(raw, 2000) == "Fix [x](https://a.example)\nline two"
    assert input_value("x" * 50, 10) == "x" * 10
    assert input_value("a\nb", 10, multiline=False) == "a b"
