"""Access to the wire-format fixtures copied into ``services/emulators/fixtures/``.

The originals live in ``shared/ref/fixtures`` outside the repository; CI clones only the repository, so the
emulators load their own committed copies. ``response_of`` hands out deep copies so callers may mutate them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"


@cache
def _load(relative: str) -> Any:
    path = (FIXTURE_DIR / relative).resolve()
    if FIXTURE_DIR not in path.parents:
        raise ValueError(f"fixture path escapes the fixture directory: {relative}")
    return json.loads(path.read_text(encoding="utf-8"))


def load_fixture(relative: str) -> Any:
    """The parsed JSON of ``fixtures/<relative>`` (e.g. ``graph/error_429_too_many_requests_doc.http.json``)."""
    return copy.deepcopy(_load(relative))


def response_of(relative: str) -> tuple[int, dict[str, str], Any]:
    """(status, headers, body) of a whole-exchange ``*.http.json`` fixture."""
    exchange = _load(relative)
    response = exchange["response"]
    return (
        int(response["status"]),
        dict(response.get("headers") or {}),
        copy.deepcopy(response.get("body")),
    )


def body_of(relative: str) -> Any:
    return response_of(relative)[2]
