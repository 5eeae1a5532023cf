"""The audit log anchored outside its own keys (issue 16, item 5). An attacker of Redis can edit any key, but not
the anchor file (`BREAKGLASS_AUDIT_ANCHOR_FILE`) nor the evidence pack on the ticket. `breakglass audit verify`
(the real command, real Redis) must never say OK about a log that lost events:

- every `audit:*` key deleted: the request records, ledger entries and per-request indexes are still there, and the
  anchor file holds checkpoints the empty log no longer reaches;
- an older DUMP of the audit keys restored: the newest grants and revocations are gone from the log but not from
  the records, and the log no longer reaches the anchor file's newest checkpoints;
- everything (records included) rolled back to an older DUMP: only the anchors outside Redis can tell, and do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from policies.lifecycle import State
from services.workflow.access import Who
from tests.factories import PEOPLE
from tests.harness import Product, settings_env, start_product
from tests.integration.jobs.conftest import submit
from tests.resilience.conftest import ROOT

PREFIX = "bgt"


@pytest.fixture()
def anchored(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> Iterator[Product]:
    product = start_product(tmp_path, redis_client, redis_url, audit_checkpoint_every=10,
                            audit_anchor_file=tmp_path / "anchors" / "audit-anchors.jsonl")
    try:
        yield product
    finally:
        product.stop()


def first_day(product: Product) -> str:
    """Sam's grant, granted and expired."""
    sam = submit(product, "sam", seconds=60)
    product.run_jobs()
    product.advance(61)
    product.run_jobs()
    assert product.store.get(sam.id).state is State.EXPIRED
    return sam.id


def second_day(product: Product) -> str:
    """Riley's grant, granted, its evidence pack on the ticket, then deactivated."""
    riley = submit(product, "riley", seconds=600)
    product.run_jobs()
    assert product.store.get(riley.id).state is State.ACTIVE
    product.services.access.deactivate(riley.id, Who(PEOPLE["riley"].object_id, "Riley Chen"))
    product.run_jobs()
    assert product.store.get(riley.id).state is State.REVOKED
    return riley.id


def dump(client: redis.Redis, pattern: str) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.scan_iter(match=pattern, count=1000)}


def restore(client: redis.Redis, pattern: str, saved: dict[bytes, bytes]) -> None:
    """Put the keys matching `pattern` back exactly as they were (newer keys deleted)."""
    current = list(client.scan_iter(match=pattern, count=1000))
    if current:
        client.delete(*current)
    for key, value in saved.items():
        client.restore(key, 0, value, replace=True)


def audit_verify(product: Product, *args: str, anchor_setting: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(product.settings.data_dir), **settings_env(product.settings)}
    if not anchor_setting:
        env.pop("BREAKGLASS_AUDIT_ANCHOR_FILE", None)
    return subprocess.run([sys.executable, "-m", "services.ops.cli", "audit", "verify", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=str(ROOT))


def anchors_of(product: Product) -> list[dict[str, Any]]:
    path = Path(product.settings.audit_anchor_file)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_clean_log_verifies_against_its_anchors(anchored):
    first_day(anchored)
    second_day(anchored)
    written = anchors_of(anchored)
    # Every grant and revocation outcome is anchored (plus a checkpoint every 10 events).
    events = {e.seq: e.event for e in anchored.audit.events()}
    assert {"grant.activated", "grant.expired", "grant.revoked"} <= {events[a["seq"]] for a in written}
    assert stat_mode(Path(anchored.settings.audit_anchor_file)) == 0o600
    result = audit_verify(anchored)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK") and f"{len(written)} anchor" in result.stdout, result.stdout


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_wiping_every_audit_key_is_caught(anchored, redis_client):
    sam = first_day(anchored)
    second_day(anchored)
    redis_client.delete(*redis_client.scan_iter(match=f"{PREFIX}:audit:*"))
    assert anchored.audit.verify().ok  # the chain alone is fine with an empty log: that was the hole

    for anchor_setting in (False, True):
        result = audit_verify(anchored, anchor_setting=anchor_setting)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.startswith("FAILED"), result.stdout
        if anchor_setting:
            assert "anchor" in result.stdout and "wiped or rolled back" in result.stdout, result.stdout
        else:  # without the anchor file, the request records and ledger give it away
            assert "no audit events" in result.stdout and sam in result.stdout, result.stdout


def test_restoring_an_older_dump_of_the_audit_keys_is_caught(anchored, redis_client):
    first_day(anchored)
    old_log = dump(redis_client, f"{PREFIX}:audit:*")
    riley = second_day(anchored)
    restore(redis_client, f"{PREFIX}:audit:*", old_log)  # Riley's grant and revocation vanish from the log
    assert anchored.audit.verify().ok  # a shorter log is a valid log on its own

    with_anchor = audit_verify(anchored)
    assert with_anchor.returncode == 1 and with_anchor.stdout.startswith("FAILED"), with_anchor.stdout
    assert "anchor" in with_anchor.stdout and "rolled back" in with_anchor.stdout, with_anchor.stdout
    without = audit_verify(anchored, anchor_setting=False)  # the records still know what happened
    assert without.returncode == 1 and without.stdout.startswith("FAILED"), without.stdout
    assert riley in without.stdout, without.stdout


def test_rolling_back_all_of_redis_is_caught_by_the_anchors_outside_it(anchored, redis_client, tmp_path):
    first_day(anchored)
    everything = dump(redis_client, f"{PREFIX}:*")
    riley = second_day(anchored)
    evidence = [a for a in anchored.servicenow.attachments() if riley in a["file_name"] and
                a["file_name"].endswith("-activated.json")]
    assert evidence, "the evidence pack went to the ticket"
    pack = tmp_path / "evidence.json"
    pack.write_bytes(anchored.servicenow.attachment_content(evidence[0]["sys_id"]))
    assert json.loads(pack.read_text())["checkpoint"]["seq"] > 0  # the ticket holds a signed checkpoint
    restore(redis_client, f"{PREFIX}:*", everything)  # records, ledger, indexes and log: all consistent again

    for args in ((), ("--anchor", str(pack))):
        result = audit_verify(anchored, *args, anchor_setting=not args)
        assert result.returncode == 1, (args, result.stdout + result.stderr)
        assert result.stdout.startswith("FAILED") and "rolled back" in result.stdout, (args, result.stdout)


def test_a_forged_anchor_line_is_refused(anchored, tmp_path):
    first_day(anchored)
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps({"seq": 1, "hash": "0" * 64, "at": "2026-11-23T09:00:00+00:00",
                                  "mac": "f" * 64}) + "\n")
    result = audit_verify(anchored, "--anchor", str(forged), anchor_setting=False)
    assert result.returncode == 1 and "signature" in result.stdout, result.stdout


def test_concurrent_processes_append_whole_lines(tmp_path):
    from services.state.anchors import AnchorFile

    path = tmp_path / "anchors.jsonl"
    code = ("import sys; from pathlib import Path; from services.state.anchors import AnchorFile\n"
            "f = AnchorFile(Path(sys.argv[1]))\n"
            "for i in range(300):\n"
            "    f.append({'seq': i, 'hash': sys.argv[2] * 64, 'at': 'x' * 200, 'mac': 'm' * 64})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)], cwd=str(ROOT)) for n in range(4)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 1200
    assert all(json.loads(line)["hash"] in {str(n) * 64 for n in range(4)} for line in lines)
    assert [line for line in AnchorFile(path).read() if line.problem] == []


def test_verifying_a_live_system_never_reports_tampering(anchored):
    """Requests are submitted, granted and revoked while verify runs: a record or ledger entry written just before
    its audit event, or an event appended after the snapshot, is never mistaken for a lost event."""
    from services.state.anchors import AnchorFile, verify_everything

    stop = threading.Event()
    results: list[Any] = []
    problems: list[BaseException] = []

    def verify() -> None:
        try:
            while not stop.is_set():
                results.append(verify_everything(anchored.store, anchored.audit, AnchorFile(
                    Path(anchored.settings.audit_anchor_file)).checkpoints()))
        except BaseException as exc:  # reported below
            problems.append(exc)

    verifier = threading.Thread(target=verify, daemon=True)
    verifier.start()
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # the jobs run here: RQ's worker wants the main thread
            record = submit(anchored, "riley", seconds=600)
            anchored.run_jobs()
            anchored.services.access.deactivate(record.id, Who(PEOPLE["riley"].object_id, "Riley Chen"))
            anchored.run_jobs()
    finally:
        stop.set()
        verifier.join(timeout=30)
    assert not problems
    assert [r.render() for r in results if not r.ok] == []
    assert len(results) >= 3
