"""The committed fixture copies stay identical to the reference set (checked only where the reference exists;
CI clones just the repository, so there the test skips)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.emulators.fixture_files import FIXTURE_DIR

REFERENCE = Path(__file__).resolve().parents[4] / "shared" / "ref" / "fixtures"


def _copies() -> list[Path]:
    return sorted(p for p in FIXTURE_DIR.rglob("*.json"))


def test_every_copy_is_valid_json() -> None:
    assert _copies(), "fixture copies are missing"
    for path in _copies():
        json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference fixtures not available (CI clones only the repo)")
def test_copies_match_the_reference_fixtures() -> None:
    for path in _copies():
        original = REFERENCE / path.relative_to(FIXTURE_DIR)
        assert original.is_file(), f"{path.relative_to(FIXTURE_DIR)} has no reference original"
        assert path.read_bytes() == original.read_bytes(), f"{path.relative_to(FIXTURE_DIR)} drifted"
