"""`breakglass report`: the usage report read from a real audit log (Redis, sealed segments included) on an empty
log and on small logs whose every number is known; role creep flags; a requester sees only their own lines; the
CSV cannot smuggle a formula and the Markdown no markup."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.clock import FixedClock
from services.state.audit import AuditLog
from services.workflow.usage import build_report
from tests.conftest import AUDIT_KEY
from tests.factories import PEOPLE

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=90)
IT_ADMINS = "11111111-0000-0000-0000-000000000001"
ONCALL = "11111111-0000-0000-0000-000000000002"


class Log:
    """Appends a request's life to a real audit log at chosen times."""

    def __init__(self, redis_client):
        self.clock = FixedClock(NOW - timedelta(days=200))
        self.audit = AuditLog(redis_client, AUDIT_KEY, prefix="bgt", clock=self.clock, checkpoint_every=50,
                              segment_size=16, keep_plain=16)
        self.n = 0

    def at(self, when: datetime) -> Log:
        self.clock.set(when)
        return self

    def grant(self, who: str, role: str, when: datetime, *, minutes: int = 60, outcome: str = "auto_approve",
              approver: str | None = None, flags: tuple[str, ...] = (), end: str = "expired",
              extend_minutes: int = 0, lane: str | None = None, requester: str | None = None) -> str:
        self.n += 1
        rid = f"BG-T{self.n:05d}"
        target = PEOPLE[who].object_id
        self.at(when).audit.append("request.submitted", actor=target, request_id=rid, data={
            "requester": PEOPLE[requester or who].object_id, "target": target, "entitlement": role,
            "duration": minutes * 60})
        self.audit.append("request.decided", actor="system:policy", request_id=rid,
                          data={"outcome": outcome, "flags": list(flags), "lane": lane})
        if outcome == "deny":
            return rid
        if approver:
            self.audit.append("request.approved", actor=PEOPLE[approver].object_id, request_id=rid)
        starts = when + timedelta(seconds=5)
        ends = starts + timedelta(minutes=minutes)
        self.at(starts).audit.append("grant.activated", actor="system:worker", request_id=rid,
                                     data={"starts_at": starts.isoformat(), "ends_at": ends.isoformat()})
        if extend_minutes:
            ends += timedelta(minutes=extend_minutes)
            self.at(starts + timedelta(minutes=5)).audit.append("grant.extended", actor="system:worker",
                                                                request_id=rid, data={"ends_at": ends.isoformat()})
        if end == "revoked":
            self.at(starts + timedelta(minutes=10)).audit.append("grant.revoked", actor="system:worker",
                                                                 request_id=rid, data={"reason": "deactivated"})
            self.audit.append("grant.sessions_revoked", actor="system:worker", request_id=rid)
        else:
            self.at(ends).audit.append("grant.expired", actor="system:worker", request_id=rid)
        return rid


@pytest.fixture
def log(redis_client) -> Log:
    return Log(redis_client)


def test_an_empty_log_gives_an_empty_report_in_every_format(log: Log, policy):
    report = build_report(log.audit.events(), policy, since=SINCE, until=NOW)
    assert report.events_read == 0 and report.lines == [] and report.unused == []
    assert json.loads(report.to_json())["lines"] == []
    assert report.to_csv().splitlines()[0].startswith("person,person_name,role,role_name,activations")
    assert len(report.to_csv().splitlines()) == 1
    assert "No activations or denials in the period." in report.to_markdown()


def test_every_number_of_a_small_log(log: Log, policy):
    day = NOW - timedelta(days=10)
    log.grant("riley", "user-admin", day, minutes=60)  # by rule, expired
    log.grant("riley", "user-admin", day + timedelta(days=1), minutes=120, outcome="needs_approval",
              approver="dana", flags=("unusual_timing",), extend_minutes=30)  # after hours, extended to 150 min
    log.grant("riley", "user-admin", day + timedelta(days=2), minutes=60, outcome="needs_approval",
              approver="bo", end="revoked")  # revoked after 10 minutes, sessions too
    log.grant("riley", "user-admin", day + timedelta(days=3), outcome="deny")
    log.grant("riley", "user-admin", NOW - timedelta(days=200), minutes=60)  # before the window: not counted
    report = build_report(log.audit.events(), policy, since=SINCE, until=NOW)
    [line] = report.lines
    row = line.row(report.names)
    assert (row["activations"], row["denials"], row["auto_approvals"], row["human_approvals"]) == (3, 1, 1, 2)
    assert row["total_minutes"] == 60 + 150 + 10 and row["median_minutes"] == 60
    assert row["after_hours_share"] == round(1 / 3, 3) and row["extensions"] == 1
    assert row["revoked_early"] == 1 and row["sessions_revoked"] == 1
    assert "Dana Whitfield (1)" in row["approved_by"] and "Bo Achterberg (1)" in row["approved_by"]
    assert row["role_name"] == "User Administrator" and not row["flags"]
    assert report.events_read > 20  # sealed segments were read too (segment size 16)


def test_role_creep_is_flagged(log: Log, policy):
    start = NOW - timedelta(days=60)
    for n in range(policy.reviews.max_activations_per_30d + 1):  # all within 30 days, all at the lane's maximum
        log.grant("sam", "global-admin", start + timedelta(days=2 * n, hours=1), minutes=60, lane="break-glass")
    log.grant("kai", "global-admin", start, minutes=60, lane="break-glass")
    log.grant("kai", "global-admin", start + timedelta(days=40), minutes=30, lane="break-glass")

    def members(group: str) -> list[tuple[str, str]]:
        return {IT_ADMINS: [(PEOPLE["riley"].object_id, "Riley Chen")],
                ONCALL: [(PEOPLE["sam"].object_id, "Sam Okafor"), (PEOPLE["kai"].object_id, "Kai Lindqvist")]
                }.get(group, [])

    report = build_report(log.audit.events(), policy, since=SINCE, until=NOW, eligible=members)
    sam = next(ln for ln in report.lines if ln.person == PEOPLE["sam"].object_id)
    assert any("more activations in 30 days" in f for f in sam.flags)
    assert "always asked for the maximum duration" in sam.flags
    kai = next(ln for ln in report.lines if ln.person == PEOPLE["kai"].object_id)
    assert not kai.flags
    unused = {(u["person"], u["role"]) for u in report.unused}
    assert (PEOPLE["riley"].object_id, "global-admin") in unused
    assert (PEOPLE["sam"].object_id, "global-admin") not in unused
    assert (PEOPLE["sam"].object_id, "user-admin") in unused  # eligible through Identity On-Call, never used


def test_a_requester_sees_only_their_own_lines(log: Log, policy):
    log.grant("riley", "user-admin", NOW - timedelta(days=3))
    log.grant("sam", "helpdesk-admin", NOW - timedelta(days=2))
    report = build_report(log.audit.events(), policy, since=SINCE, until=NOW)
    mine = report.only(PEOPLE["sam"].object_id)
    assert [ln.person for ln in mine.lines] == [PEOPLE["sam"].object_id]
    assert "Riley" not in mine.to_markdown() and PEOPLE["riley"].object_id not in mine.to_csv()


def test_hostile_names_stay_text(log: Log, policy):
    log.grant("riley", "user-admin", NOW - timedelta(days=3))
    report = build_report(log.audit.events(), policy, since=SINCE, until=NOW)
    report.names[PEOPLE["riley"].object_id] = "=HYPERLINK(\"https://evil\")|[x](y)"
    row = next(csv.DictReader(io.StringIO(report.to_csv())))
    assert row["person_name"].startswith("'=")
    md = report.to_markdown()
    assert "[x](y)" not in md and "\\|" in md


def test_the_cli_prints_every_format_and_survives_an_empty_log(redis_client, redis_url, log: Log, tmp_path):
    from tests.integration.test_cli import run

    env = {"REDIS_URL": redis_url, "BREAKGLASS_AUDIT_HMAC_KEY": AUDIT_KEY.decode()}
    empty = run("report", "--since", "90d", "--format", "csv", "--no-directory", env=env)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == [empty.stdout.splitlines()[0]] and "0 line(s)" in empty.stderr
    log.grant("riley", "user-admin", datetime.now(UTC) - timedelta(days=3))
    for fmt in ("md", "json"):
        result = run("report", "--since", "30d", "--format", fmt, "--no-directory", env=env)
        assert result.returncode == 0, result.stderr
        assert "User Administrator" in result.stdout
    out = tmp_path / "usage.json"
    assert run("report", "--format", "json", "--out", str(out), "--no-directory", env=env).returncode == 0
    assert json.loads(out.read_text())["lines"][0]["activations"] == 1
    bad = run("report", "--since", "last tuesday", env=env)
    assert bad.returncode == 2 and "neither a duration" in bad.stderr and "Traceback" not in bad.stderr
