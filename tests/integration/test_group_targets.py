"""A group entitlement that cannot be granted is a clear finding in `policy check --online` and in `doctor`,
never a failed grant at 3 AM, a 500 or a stack trace: a group PIM for Groups does not manage (pim mode), a group
that is not there, Graph unreachable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.ops.doctor import FAIL, OK, Doctor
from tests.harness import Product, settings_env, start_product
from tests.integration.jobs.test_groups import group_policy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url, policy_file=group_policy(tmp_path))
    yield p
    p.stop()


def doctor(product: Product, **overrides: Any) -> tuple[str, str]:
    settings = product.settings.model_copy(update=overrides)
    [found] = [c for c in Doctor(settings).run() if c.name == "Group entitlements"]
    return found.status, found.detail


def only_exchange(tmp_path: Path) -> Path:
    path = group_policy(tmp_path)
    text = path.read_text()
    start = text.index("  - id: sharepoint-admins")
    end = text.index("\n# Bundles: several entitlements")
    out = tmp_path / "exchange-only.yaml"
    out.write_text(text[:start] + text[end:])
    return out


def check_online(product: Product, policy: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **settings_env(product.settings), **env}
    return subprocess.run([sys.executable, "-m", "services.ops.cli", "policy", "check", "--online", str(policy)],
                          capture_output=True, text=True, env=full, cwd=ROOT, timeout=60)


def test_doctor_fails_on_a_group_pim_does_not_manage_and_names_the_fix(product, tmp_path):
    status, detail = doctor(product)
    assert status == FAIL
    assert "sharepoint-admins" in detail and "not onboarded to PIM for Groups" in detail
    assert "Discover groups" in detail and "exchange-admins" not in detail
    assert doctor(product, policy_file=only_exchange(tmp_path))[0] == OK
    # Direct mode needs no onboarding: both groups can take members.
    status, detail = doctor(product, grant_mode="direct")
    assert status == OK, detail


def test_doctor_names_the_missing_group_permission(product, tmp_path):
    from services.emulators.entra import DEFAULT_APP_ROLES, DEMO_GRAPH_CLIENT_ID
    entra = product.emulators["entra"]
    with entra.lock:
        entra.clients[DEMO_GRAPH_CLIENT_ID].roles = [r for r in DEFAULT_APP_ROLES
                                                      if r != "GroupMember.ReadWrite.All"]
    status, detail = doctor(product, grant_mode="direct", policy_file=only_exchange(tmp_path))
    assert status == FAIL and "GroupMember.ReadWrite.All" in detail


def test_policy_check_online_reports_the_group_that_is_not_onboarded(product, tmp_path):
    policy = group_policy(tmp_path)
    result = check_online(product, policy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ERROR" in result.stderr and "sharepoint-admins" in result.stderr
    assert "not onboarded to PIM for Groups" in result.stderr and "Traceback" not in result.stderr
    assert "exchange-admins): Exchange Admins (JIT) (group member): managed by PIM for Groups" in result.stdout
    assert check_online(product, only_exchange(tmp_path)).returncode == 0


def test_policy_check_online_says_so_in_one_line_when_graph_is_unreachable(product, tmp_path):
    result = check_online(product, only_exchange(tmp_path), GRAPH_BASE_URL="http://127.0.0.1:9/v1.0",
                          BREAKGLASS_HTTP_MAX_ATTEMPTS="1")
    assert result.returncode == 1
    assert "could not read" in result.stderr and "Traceback" not in result.stderr
