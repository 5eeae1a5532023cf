"""Values inside the Markdown of evidence packs: nothing a person (or Graph) wrote can form a heading, a list, a
link, an image, a table cell or HTML."""

from __future__ import annotations

import re
from datetime import datetime

from cards.text import plain_line

_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def md_inline(value: object) -> str:
    """A value inside a Markdown line: one line, links defanged, every ASCII punctuation character backslash-escaped
    (CommonMark lets any of them be escaped), so no heading, list, link, image, table cell or HTML can form."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", plain_line(str(value or ""), 2000))


def md_fence(text: str) -> list[str]:
    """Text kept verbatim in a fenced block whose fence is longer than any run of backticks inside it, so nothing
    in it renders and nothing in it can close the block early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}text", *text.split("\n"), fence]


def md_time(value: str) -> str:
    """A log record's time as "2026-11-23 09:02:00 UTC" (Graph sends seven fractional digits)."""
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")).strftime(
            "%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return md_inline(value)
