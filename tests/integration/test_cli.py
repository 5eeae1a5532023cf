"""The `breakglass` console script, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.state.audit import AuditLog
from tests.conftest import AUDIT_KEY

ROOT = Path(__file__).resolve().parents[2]
BREAKGLASS = [sys.executable, "-m", "services.ops.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "BREAKGLASS_KEY_PREFIX": "bgt", **(env or {})}
    return subprocess.run([*BREAKGLASS, *args], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=60)


def test_policy_check_accepts_the_shipped_policy():
    result = run("policy", "check", "policies/default.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: policies/default.yaml: 5 entitlements")


def test_policy_check_rejects_a_broken_policy_with_file_path_and_reason(tmp_path):
    broken = (ROOT / "policies/default.yaml").read_text().replace("max_duration: 8h", "max_duration: 30h", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    result = run("policy", "check", str(path))
    assert result.returncode == 1
    line = broken.splitlines().index("    max_duration: 30h") + 1
    assert f"{path}:{line}: entitlements[3].max_duration: must be ≤ 24h" in result.stderr
    assert "Traceback" not in result.stderr


def test_policy_schema_is_json():
    result = run("policy", "schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "breakglass policy file"


def test_policy_explain_prints_every_rule(tmp_path):
    req = {
        "now": "2026-11-23T10:00:00+01:00",
        "request": {"requester": "cccccccc-0000-0000-0000-000000000001", "entitlement": "global-admin",
                    "duration": "30m", "ticket": "INC0012347",
                    "justification": "Global Admin for a password reset of the CFO's assistant, INC0012347"},
        "facts": {"requester": {"upn": "riley@contoso.example", "display_name": "Riley Chen",
                                "groups": ["11111111-0000-0000-0000-000000000001"]},
                  "ticket": {"number": "INC0012347", "priority": 3, "caller": "riley@contoso.example"}},
    }
    path = tmp_path / "req.json"
    path.write_text(json.dumps(req))
    result = run("policy", "explain", "--request", str(path))
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["outcome"] == "needs_approval"
    assert decision["max_duration"] == "PT4H" and decision["quorum"] == 1
    assert {r["rule"] for r in decision["rules"]} >= {"requester.eligible", "justification.specific", "ticket.exists",
                                                     "timing.business_hours", "approval.required"}
    assert all("passed" in r and r["reason"] for r in decision["rules"])
    assert any("Helpdesk Administrator would be enough" in h for h in decision["hints"])
    assert [a["name"] for a in decision["approvers"] if a["notify_first"]] == ["Dana Whitfield"]


def test_audit_verify_catches_a_one_byte_edit(redis_client, redis_url, clock):
    audit = AuditLog(redis_client, AUDIT_KEY, prefix="bgt", clock=clock)
    for i in range(5):
        audit.append("request.submitted", actor="cli-test", request_id="BG-CLI001", data={"n": i})
    env = {"REDIS_URL": redis_url, "BREAKGLASS_AUDIT_HMAC_KEY": AUDIT_KEY.decode()}
    ok = run("audit", "verify", env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 5 events"), ok.stderr
    shown = run("audit", "show", "BG-CLI001", env=env)
    assert shown.returncode == 0 and shown.stdout.count("request.submitted") == 5
    raw = redis_client.lindex("bgt:audit:events", 2)
    redis_client.lset("bgt:audit:events", 2, raw.replace(b'"n":2', b'"n":9'))
    bad = run("audit", "verify", env=env)
    assert bad.returncode == 1
    assert bad.stdout.startswith("FAILED at seq 3:")


def test_audit_commands_refuse_to_run_without_a_key_in_production(redis_url):
    result = run("audit", "verify", env={"REDIS_URL": redis_url, "BREAKGLASS_AUDIT_HMAC_KEY": "",
                                          "BREAKGLASS_ENV": "production"})
    assert result.returncode == 2
    assert "BREAKGLASS_AUDIT_HMAC_KEY" in result.stderr and "Traceback" not in result.stderr


def test_audit_export_jsonl(redis_client, redis_url, clock, tmp_path):
    audit = AuditLog(redis_client, AUDIT_KEY, prefix="bgt", clock=clock)
    for i in range(3):
        audit.append("grant.revoked", actor="worker", data={"n": i})
    out = tmp_path / "audit.jsonl"
    result = run("audit", "export", "--format", "jsonl", "--out", str(out),
                 env={"REDIS_URL": redis_url, "BREAKGLASS_AUDIT_HMAC_KEY": AUDIT_KEY.decode()})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3] and all(e["hash"] and e["mac"] for e in lines)


def test_readme_examples_explain():
    for name, outcome in [("request-password-reset.json", "needs_approval"), ("request-break-glass.json",
                                                                               "auto_approve")]:
        result = run("policy", "explain", "--request", f"docs/examples/{name}")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["outcome"] == outcome


def test_policy_explain_explains_a_bundle_member_by_member():
    result = run("policy", "explain", "--request", "docs/examples/request-bundle.json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["outcome"] == "needs_approval" and decision["entitlement"] == "incident-responder"
    members = {m["entitlement"]: m for m in decision["members"]}
    assert list(members) == ["conditional-access-admin", "user-admin", "helpdesk-admin"]
    assert members["user-admin"]["outcome"] == "auto_approve"
    assert members["conditional-access-admin"]["reasons"] == [
        "Conditional Access Administrator always requires approval."]
    assert members["helpdesk-admin"]["summary"].startswith("Auto-approved")
    assert [a["name"] for a in decision["approvers"] if a["notify_first"]] == ["Dana Whitfield"]


@pytest.mark.slow
def test_demo_bundle_plays_one_bundle_request_end_to_end(tmp_path):
    result = subprocess.run([*BREAKGLASS, "demo", "--bundle", "--speed", "600"], capture_output=True, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)}, cwd=ROOT, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "Dana Whitfield clicks Approve once" in out
    assert "3 roles granted together" in out
    for member in ("conditional-access-admin", "user-admin", "helpdesk-admin"):
        assert f"granted                    {member}: pim assignment" in out  # each activation on its own line
    assert "— expired" in out and "revoked at expiry" in out and "audit verify: OK" in out
    assert "Scenario 1" not in out  # the default demo's scenarios are not played


def test_demo_refuses_a_speed_the_clock_does_not_allow():
    for speed in ("0", "5000"):
        result = run("demo", "--speed", speed)
        assert result.returncode == 2 and "--speed must be between 1 and 3600" in result.stderr
        assert "Traceback" not in result.stderr


def test_version_is_printed_with_either_flag():
    from importlib.metadata import version

    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"breakglass {version('breakglass')}"
