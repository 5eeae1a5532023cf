"""A policy edit cannot silently weaken the policy (issue 16, item 4).

Through the real `breakglass policy check` process: a duplicate key is rejected with file:line (YAML's "last key
wins" would turn Global Administrator's `approval: required` into `none`), numbers and booleans are strictly typed,
and risky choices (a tier-0 role with `approval: none`, an empty denylist) warn, and fail with `--strict`.
On hot reload, in every process of an installation sharing one Redis: a duplicate key keeps the previous policy;
a change is audited once (`policy.changed`, both digests), and a change that weakens a tier-0 rule raises one
alert, however many processes reload it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from services.clock import OffsetClock
from services.composition import Runtime, Services
from tests.harness import Product, start_product
from tests.integration.bot.conftest import Teams, serving
from tests.teams_activities import message

ROOT = Path(__file__).resolve().parents[2]
BREAKGLASS = [sys.executable, "-m", "services.ops.cli"]
DEFAULT = (ROOT / "policies" / "default.yaml").read_text()
GA_APPROVAL = "    approval: required                      # always, per the JIT procedure\n"
assert DEFAULT.count(GA_APPROVAL) == 1


def check(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BREAKGLASS, "policy", "check", *flags, str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env={**os.environ, "BREAKGLASS_KEY_PREFIX": "bgt"})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = text.splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if line.startswith(needle)]
    return hits[occurrence - 1]


def test_a_duplicate_key_is_rejected_with_file_and_line(tmp_path):
    text = DEFAULT.replace(GA_APPROVAL, GA_APPROVAL + "    approval: none\n")
    path = write(tmp_path, "duplicate.yaml", text)
    result = check(path)
    assert result.returncode == 1, result.stdout
    first, second = line_of(text, "    approval: required"), line_of(text, "    approval: none")
    assert (f"{path}:{second}: entitlements[0].approval: duplicate key 'approval' (first at line {first}); "
            f"YAML would silently keep the last one") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ['"1"', "true", "1.0"])
def test_numbers_and_booleans_are_strictly_typed(tmp_path, value):
    text = DEFAULT.replace("    quorum: 1\n", f"    quorum: {value}\n", 1)
    assert text != DEFAULT
    path = write(tmp_path, "loose.yaml", text)
    result = check(path)
    assert result.returncode == 1, result.stdout
    assert f"{path}:{line_of(text, '    quorum:')}: entitlements[0].quorum: " in result.stderr, result.stderr
    boolean = DEFAULT.replace("  required: true\n", '  required: "yes"\n', 1)
    assert check(write(tmp_path, "loose-bool.yaml", boolean)).returncode == 1


def test_risky_choices_warn_and_fail_with_strict(tmp_path):
    text = DEFAULT.replace(GA_APPROVAL, "    approval: none\n")
    start = text.index("denylist:\n")
    end = text.index("\n\n", start)
    text = text[:start] + "denylist: {}" + text[end:]
    path = write(tmp_path, "risky.yaml", text)
    lenient = check(path)
    assert lenient.returncode == 0, lenient.stderr
    assert lenient.stdout.startswith(f"OK: {path}")
    warnings = lenient.stderr
    assert (f"WARNING: {path}:{line_of(text, '    approval: none')}: entitlements[0].approval: Global "
            f"Administrator is a tier-0 role and needs no approval") in warnings, warnings
    assert f"WARNING: {path}:{line_of(text, 'denylist:')}: denylist: the denylist is empty" in warnings, warnings
    strict = check(path, "--strict")
    assert strict.returncode == 1
    assert "2 warnings" in strict.stderr and "--strict" in strict.stderr
    shipped = check(ROOT / "policies" / "default.yaml", "--strict")
    assert shipped.returncode == 0 and "WARNING" not in shipped.stderr, shipped.stderr


# --- hot reload across processes ----------------------------------------------------------------------------

def other_process(product: Product) -> Services:
    """Another process of the same installation: its own policy source, the same Redis and emulators."""
    runtime = Runtime(product.settings, clock=OffsetClock(timedelta(seconds=product.settings.clock_offset_s)),
                      client=product.runtime.redis)
    return Services(runtime)


def edit(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time_ns() + 1_000_000_000  # a distinct mtime even on coarse file systems
    os.utime(path, ns=(stamp, stamp))


def events(product: Product, name: str) -> list[Any]:
    return [e for e in product.audit.events() if e.event == name]


def alerts_posted(product: Product) -> list[dict[str, Any]]:
    return [a["current"] for a in product.connector.all_activities()
            if a["conversationId"].split(";")[0] == product.settings.teams_approvals_channel_id
            and "tier-0" in str(a["current"])]


async def test_hot_reload_rejects_duplicates_and_audits_and_alerts_a_weakening_once(tmp_path, redis_client,
                                                                                      redis_url):
    policy = write(tmp_path, "policy.yaml", DEFAULT)
    product = start_product(tmp_path, redis_client, redis_url, policy_file=policy)
    try:
        processes = [product.services, other_process(product), other_process(product)]
        ga = [s.runtime.policies.current().entitlement("global-admin") for s in processes]
        assert all(e is not None and e.approval == "required" for e in ga)
        before = processes[0].runtime.policies.current().digest()
        async with serving(create_app(product.settings, product.services)) as client:
            teams = Teams(client, product)

            edit(policy, DEFAULT.replace(GA_APPROVAL, GA_APPROVAL + "    approval: none\n"))
            status, _ = await teams.post(message("riley", "need global admin", product.service_url))
            assert status == 201
            for s in processes:
                current = s.runtime.policies.current()
                assert current.entitlement("global-admin").approval == "required"  # the broken edit is not applied
                assert current.digest() == before
                assert "duplicate key 'approval'" in (s.runtime.policies.last_error or "")
            assert events(product, "policy.changed") == []

            weakened = DEFAULT.replace(GA_APPROVAL, "    approval: none\n")
            edit(policy, weakened)
            status, _ = await teams.post(message("riley", "need global admin again", product.service_url))
            assert status == 201
            for s in processes:
                assert s.runtime.policies.current().entitlement("global-admin").approval == "none"
            after = processes[0].runtime.policies.current().digest()
        product.run_jobs()
        [changed] = events(product, "policy.changed")
        assert (changed.data["previous_digest"], changed.data["digest"]) == (before, after)
        assert any("Global Administrator" in w and "approval" in w for w in changed.data["tier0_weakened"]), \
            changed.data
        raised = [e for e in events(product, "alert.raised") if "tier-0" in e.data["title"]]
        assert len(raised) == 1, raised
        assert len(alerts_posted(product)) == 1
        # A change that weakens nothing tier-0 is audited once too, without an alert.
        edit(policy, weakened.replace("name: Contoso JIT procedure", "name: Contoso JIT procedure (renamed)"))
        for s in processes:
            s.runtime.policies.current()
        assert len(events(product, "policy.changed")) == 2
        assert events(product, "policy.changed")[-1].data["tier0_weakened"] == []
        assert len([e for e in events(product, "alert.raised") if "tier-0" in e.data["title"]]) == 1
        assert product.audit.verify().ok
    finally:
        product.stop()
