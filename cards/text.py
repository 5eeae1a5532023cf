"""Make untrusted text safe to show in an Adaptive Card.

Teams renders TextBlock and Fact text as a markdown subset (links, images, emphasis, lists, headings) and
auto-links bare URLs. Justifications, names, ticket numbers, deny reasons and triage notes are typed by people
(or copied from tickets), so before they reach a card they are:

1. NFKC-normalised (full-width "ｈｔｔｐｓ：／／" becomes "https://" and is then defanged like any other URL);
2. stripped of bidi controls, zero-width and other format characters, control characters (newlines are kept by
   `safe_text`, folded into spaces by `safe_line`), surrogates, private-use and unassigned code points;
3. defanged: "https://evil.example/x" -> "https[:]//evil[.]example/x"; "www." hosts, bare domains ending in a
   common or two-letter top-level domain (what fuzzy linkifiers pick up, e-mail domains included) and
   "mailto:"-like schemes lose their clickable shape;
4. markdown-escaped with backslashes where a metacharacter could form syntax: always for \\ ` * [ ] { } | ~, at
   the start of a line for # > + - = (and "1." / "1)" list markers), "(" after "]", "!" before "[", "<" before
   a tag or autolink, "&" before an entity, "_" unless it sits inside a word. The output never contains a raw
   "](", "][", "![", "{{" or "://", so even a client that ignores backslash escapes cannot build a link;
5. capped at `limit` characters with a trailing "…" (escapes and defang marks are never cut in half).

Escaping is not idempotent: escape a value exactly once, right before it is placed in a card.
"""

from __future__ import annotations

import functools
import re
import unicodedata

ELLIPSIS = "…"

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# Not format characters, but render as nothing (fillers, the combining grapheme joiner, Khmer inherent vowels).
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u3164\uffa0")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# Defang marks travel through the escaper as private-use placeholders (real private-use input is dropped in
# step 2, so they cannot be forged) and are expanded at the end.
_COLON = "\ue000"
_DOT = "\ue001"
_MARKS = {_COLON: "[:]", _DOT: "[.]"}

# A host ends at ":" too, so "a://b://c" defangs both separators.
_HOST = r"[^\s/?#:\\\[\](){}<>\"'`|*^]*"
_SCHEME_URL = re.compile(r"://(" + _HOST + ")")
_WWW = re.compile(r"(?i)(?<![\w.-])(www)\.(" + _HOST + ")")
# "mailto:" wherever it appears; other schemes only when something follows the colon ("data: ..." stays prose).
_MAILTO = re.compile(r"(?i)(mailto):")
_SCHEMES = re.compile(r"(?i)(?<![\w-])(tel|sms|callto|sip|sips|im|xmpp|javascript|vbscript|data|file|ms-teams"
                      r"|msteams|teams|ftp|ssh|smb|ldap|ldaps):(?=\S)")
_DOMAIN = re.compile(r"(?<![\w.-])((?:[^\W_][\w-]*\.)+)([^\W\d_]{2,63})(?![\w-])")
_TLDS = frozenset("""
    com net org edu gov mil int info biz name pro aero asia coop museum mobi jobs travel tel cat post xxx
    app dev page web site online store shop blog news link click live cloud tech email zip mov top xyz club
    one win bid loan work help support host website space fun icu vip today world life digital network
    microsoft office azure windows
""".split())
_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{1,31});")

_ALWAYS = frozenset("\\`*[]{}|~")
_LINE_START = frozenset("#>+-=")


def safe_text(value: str, limit: int = 1000) -> str:
    """Multi-line untrusted text, ready for a TextBlock or Fact value."""
    return _render(value, limit, multiline=True)


def safe_line(value: str, limit: int = 120) -> str:
    """One line of untrusted text (names, ticket numbers, titles): newlines become spaces."""
    return _render(value, limit, multiline=False)


def plain_line(value: str, limit: int = 120) -> str:
    """One line of text for places Teams shows without markdown (choice titles): cleaned and defanged, no escapes."""
    _check_limit(limit)
    text, truncated = _prepare(value, limit, multiline=False)
    return _cap([_MARKS.get(ch, ch) for ch in _defang(text)], limit, truncated)


def input_value(value: str, limit: int, *, multiline: bool = True) -> str:
    """A user's own previous input, put back into an input box: invisible characters dropped, nothing else."""
    _check_limit(limit)
    return _strip_invisible(value[: limit * 4], multiline=multiline)[:limit]


# --- pipeline -------------------------------------------------------------------------------------------------

def _render(value: str, limit: int, *, multiline: bool) -> str:
    _check_limit(limit)
    if len(value) <= _CACHED_UP_TO:
        return _render_cached(value, limit, multiline)
    return _render_uncached(value, limit, multiline)


def _render_uncached(value: str, limit: int, multiline: bool) -> str:
    text, truncated = _prepare(value, limit, multiline=multiline)
    return _cap(_escape(_defang(text)), limit, truncated)


# The pipeline walks every character in Python, and cards repeat the same strings (labels, names, reasons, the
# justification on every refresh of a request's card): a pure function of its arguments, so short inputs are
# memoised. Bounded in count and in the size of what is kept (a few MB at most).
_CACHED_UP_TO = 1024
_render_cached = functools.lru_cache(maxsize=4096)(_render_uncached)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError("limit must be at least 1")


def _prepare(value: str, limit: int, *, multiline: bool) -> tuple[str, bool]:
    """Normalise, clean and lay out whitespace; also report whether the input was too long to look at fully."""
    scan = limit * 8 + 256  # bounds the work on a 100 KB paste; anything cut here forces the ellipsis
    truncated = len(value) > scan
    text = unicodedata.normalize("NFKC", value[:scan])
    text = unicodedata.normalize("NFKC", _strip_invisible(text, multiline=multiline))
    text = _strip_invisible(text, multiline=multiline)
    if not multiline:
        return " ".join(text.split()), truncated
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n"), truncated


def _strip_invisible(text: str, *, multiline: bool) -> str:
    out = []
    for ch in text.replace("\r\n", "\n"):
        if ch in _LINE_BREAKS:
            out.append("\n" if multiline and ch not in "\x0b\x0c" else " ")
        elif ch == "\t":
            out.append(" ")
        elif ch in BIDI_CONTROLS or ch in ZERO_WIDTH or ch in _INVISIBLE:
            continue
        elif unicodedata.category(ch) in _DROPPED_CATEGORIES:
            continue
        else:
            out.append(ch)
    return "".join(out)


def _defang(text: str) -> str:
    text = _SCHEME_URL.sub(lambda m: _COLON + "//" + re.sub(r"\.+", _DOT, m.group(1)), text)
    text = text.replace("://", _COLON + "//")  # belt and braces: no "://" survives
    text = _WWW.sub(lambda m: m.group(1) + _DOT + re.sub(r"\.+", _DOT, m.group(2)), text)
    text = _MAILTO.sub(lambda m: m.group(1) + _COLON, text)
    text = _SCHEMES.sub(lambda m: m.group(1) + _COLON, text)
    return _DOMAIN.sub(_defang_domain, text)


def _defang_domain(m: re.Match[str]) -> str:
    labels, tld = m.group(1), m.group(2)
    if tld.lower() in _TLDS or (len(tld) == 2 and tld.isascii()):
        return labels.replace(".", _DOT) + tld
    return m.group(0)


def _escape(text: str) -> list[str]:
    """One output unit per input character, so the length cap never splits an escape or a defang mark."""
    units: list[str] = []
    line_pos = 0
    digits_only = True
    after_bracket = False  # the last visible output is a "]" (escaped or from a defang mark)
    n = len(text)
    for i, ch in enumerate(text):
        prev = text[i - 1] if i else "\n"
        nxt = text[i + 1] if i + 1 < n else ""
        if ch == "\n":
            units.append("\n")
            line_pos, digits_only = 0, True
            continue
        unit = _escape_char(ch, prev, nxt, line_pos, digits_only, after_bracket, text, i)
        if ch in _MARKS and (after_bracket or prev == "!"):
            unit = "\\" + unit  # a defang mark after "]" or "!" must not read as "][" or "!["
        units.append(unit)
        if ch != " ":
            after_bracket = unit.endswith("]")
        digits_only = digits_only and ch.isdigit()
        line_pos += 1
    return units


def _escape_char(ch: str, prev: str, nxt: str, line_pos: int, digits_only: bool, after_bracket: bool,
                 text: str, i: int) -> str:
    if ch in _MARKS:
        return _MARKS[ch]
    if ch in _ALWAYS:
        return "\\" + ch
    escape = (
        (ch == "_" and not (prev.isalnum() and nxt.isalnum()))
        or (ch in _LINE_START and line_pos == 0)
        or (ch in ".)" and line_pos > 0 and digits_only)
        or (ch == "(" and after_bracket)
        or (ch == "!" and (nxt == "[" or nxt in _MARKS))
        or (ch == "<" and bool(nxt) and (nxt.isalpha() or nxt in "/!?"))
        or (ch == "&" and _ENTITY.match(text, i) is not None)
    )
    return "\\" + ch if escape else ch


def _cap(units: list[str], limit: int, truncated: bool) -> str:
    if not truncated and sum(len(u) for u in units) <= limit:
        return "".join(units)
    kept: list[str] = []
    used = 0
    for unit in units:
        if used + len(unit) > limit - 1:
            break
        kept.append(unit)
        used += len(unit)
    return "".join(kept).rstrip() + ELLIPSIS
