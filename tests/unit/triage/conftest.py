from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from policies.document import PolicyDocument, parse_policy

ROOT = Path(__file__).resolve().parents[3]


@cache
def load_policy() -> PolicyDocument:
    return parse_policy((ROOT / "policies" / "default.yaml").read_text(), "policies/default.yaml")


@pytest.fixture
def policy() -> PolicyDocument:
    return load_policy()
