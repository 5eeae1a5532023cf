"""The benchmark keeps working: `python -m bench --quick` runs every measurement end to end and writes the JSON.
Only that it runs is checked, not the figures (they depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import MEASUREMENTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_quick_benchmark_runs_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert not data["errors"] and not data["missing_rows"], (data["errors"], data["missing_rows"])
    keys = {row["key"] for row in data["rows"]}
    expected = {key for _, rows in MEASUREMENTS.values() for key in rows}
    assert expected <= keys, expected - keys
    for row in data["rows"]:
        assert row["stats"]["n"] > 0, row["key"]
        assert row["goal"], row["key"]
