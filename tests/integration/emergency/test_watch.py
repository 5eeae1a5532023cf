"""The emergency-account watch against the emulators (Graph sign-in and audit logs from the fixtures, ServiceNow,
the Bot Connector): a sign-in opens one P1, posts the critical alert and the checklist card, tells the people in
`notify`; paging and a 429 on the log; a burst joins one incident; a duplicate after a restart (and two pollers at
once) opens nothing new; failed sign-ins alert unless the policy says not to; a record that arrives late is still
found; a tenant without P1/P2 is never silent."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from cards.inspect import text as card_text
from services.composition import Runtime, Services
from services.ops.doctor import Doctor
from tests.harness import Product

from .helpers import action, ago, channel_cards, created_incidents, personal_cards_to, sign_in

MORGAN = "cccccccc-0000-0000-0000-000000000006"
JORDAN = "cccccccc-0000-0000-0000-000000000005"


def events(product: Product, name: str) -> list:
    return [e for e in product.audit.events() if e.event == name]


def test_a_sign_in_opens_one_p1_alerts_tells_and_starts_the_checklist(product: Product):
    product.graph.set_state({"sign_ins": [sign_in(ago(product, 2), sid="si-1")],
                             "directory_audits": [action(ago(product, 1), 1)]})
    report = product.services.emergency_watch.poll()
    assert len(report.opened) == 1 and not report.errors
    [incident] = created_incidents(product)
    assert (incident["impact"], incident["urgency"], incident["priority"]) == ("1", "1", "1")
    assert "emergency access account Break Glass 01 signed in" in incident["short_description"]
    for fact in ("203.0.113.10", "Azure Portal", "Amsterdam", "Result: success", "Conditional Access: success",
                 "si-1"):
        assert fact in incident["description"], fact
    texts = [card_text(c["card"]) for c in channel_cards(product)]
    assert any("Emergency access account signed in" in t and "CRITICAL" in t.upper() for t in texts)
    checklist = [t for t in texts if "Post-use checklist" in t]
    assert len(checklist) == 1 and "Reason documented in the incident" in checklist[0]
    assert "Add member to role" in checklist[0] or "1 as of" in checklist[0]
    for person in (MORGAN, JORDAN):
        assert any("Emergency access account signed in" in card_text(c) for c in personal_cards_to(product, person))
    stored = product.services.emergency_store.get(report.opened[0])
    assert stored is not None and stored.ticket is not None and stored.ticket.number == incident["number"]
    assert [e.data["incident"] for e in events(product, "emergency.sign_in_detected")] == report.opened
    assert events(product, "emergency.incident_opened")[0].data["number"] == incident["number"]
    assert product.services.emergency_watch.problems() == []


def test_pages_and_a_429_are_followed_and_a_burst_joins_one_incident(product: Product):
    # Three sign-ins within 30 minutes, then two 40 minutes later: two incidents. Two per page, a 429 first.
    rows = [sign_in(ago(product, m), sid=f"si-{m}") for m in (14, 10, 3)]
    rows += [sign_in(ago(product, 55 + m), sid=f"early-{m}") for m in (0, 5)]
    product.graph.set_state({"sign_ins": rows, "audit_page_size": 2})
    product.graph.add_fault(path="/v1.0/auditLogs/signins", method="GET", status=429,
                            headers={"Retry-After": "0.05"}, times=1)
    watch = product.services.emergency_watch
    watch.lookback = __import__("datetime").timedelta(minutes=90)
    report = watch.poll()
    assert report.seen == 5 and not report.errors
    assert len(report.opened) == 2 and len(report.joined) == 3
    assert len(created_incidents(product)) == 2
    calls = product.graph.calls.list(method="GET")
    assert any(c.status == 429 for c in calls)
    assert len([c for c in calls if "signins" in c.path.lower() and c.status == 200]) == 3  # 2 + 2 + 1 (+ empty)
    incidents = [product.services.emergency_store.get(i) for i in report.opened]
    assert sorted(len(i.sign_ins) for i in incidents) == [2, 3]
    burst = next(i for i in incidents if len(i.sign_ins) == 3)
    notes = [e["value"] for e in product.servicenow.journal(burst.ticket.number)]
    assert len([n for n in notes if "another sign-in by the account" in n]) == 2


def test_the_same_sign_in_after_a_restart_or_in_two_pollers_opens_nothing_new(product: Product, redis_client):
    product.graph.set_state({"sign_ins": [sign_in(ago(product, 2), sid="si-dup")]})

    def fresh_services() -> Services:
        return Services(Runtime(product.settings, clock=product.clock, client=redis_client))

    pollers = [fresh_services(), fresh_services()]
    threads = [threading.Thread(target=s.emergency_watch.poll) for s in pollers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    restarted = fresh_services()
    # Forget how far the restarted watch had read: the same record comes back in the window.
    redis_client.delete(*redis_client.keys("bgt:emergency:polled:*"))
    report = restarted.emergency_watch.poll()
    assert report.seen == 1 and not report.opened and not report.joined
    assert len(created_incidents(product)) == 1
    assert len(events(product, "emergency.sign_in_detected")) == 1
    alerts = [c for c in channel_cards(product) if "Emergency access account signed in" in card_text(c["card"])]
    assert len(alerts) == 1


def test_failed_sign_ins_alert_by_default_and_not_when_the_policy_says_so(product: Product, tmp_path: Path):
    product.graph.set_state({"sign_ins": [sign_in(ago(product, 2), ok=False, sid="fail-1")]})
    assert len(product.services.emergency_watch.poll().opened) == 1
    assert "Result: failure 50126" in created_incidents(product)[0]["description"]

    policy = Path("policies/default.yaml").read_text().replace("alert_on_failed_sign_ins: true",
                                                               "alert_on_failed_sign_ins: false")
    (tmp_path / "policy.yaml").write_text(policy)
    quiet = Services(Runtime(product.settings.model_copy(update={"policy_file": tmp_path / "policy.yaml"}),
                             clock=product.clock, client=product.runtime.redis))
    product.graph.set_state({"sign_ins": [sign_in(ago(product, 1), ok=False, sid="fail-2")]})
    report = quiet.emergency_watch.poll()
    assert report.ignored == ["fail-2"] and not report.opened
    assert len(created_incidents(product)) == 1
    assert events(product, "emergency.sign_in_ignored")[0].data["sign_in"] == "fail-2"


def test_a_record_that_arrives_late_is_still_found(product: Product):
    late = sign_in(ago(product, 3), sid="late-1")
    late["_visibleAt"] = (product.clock.now() + __import__("datetime").timedelta(minutes=4)).isoformat()
    product.graph.set_state({"sign_ins": [late]})
    watch = product.services.emergency_watch
    assert watch.poll().seen == 0
    product.advance(60)
    assert watch.poll().seen == 0
    product.advance(240)
    report = watch.poll()
    assert report.seen == 1 and len(report.opened) == 1


def test_no_p1_licence_is_alerted_once_and_reported_until_it_works(product: Product):
    from bot.app import create_ops_app  # the ops listener's /readyz

    product.graph.set_state({"audit_licence": "free", "sign_ins": [sign_in(ago(product, 2), sid="si-l")]})
    watch = product.services.emergency_watch
    for _ in range(2):
        report = watch.poll()
        assert "P1/P2" in json.dumps(report.errors)
    alerts = [c for c in channel_cards(product) if "emergency-account watch cannot run" in card_text(c["card"])]
    assert len(alerts) == 1
    assert len(events(product, "emergency.watch_failed")) == 1
    [problem] = watch.problems()
    assert "cannot run" in problem and "Entra ID P1 or P2" in problem
    assert create_ops_app(product.services)  # builds; the readiness wording is checked through the endpoint test
    check = dict((c.name, c) for c in Doctor(product.settings).run())["emergency watch"]
    assert check.status == "FAIL" and "P1/P2" in check.detail

    product.graph.set_state({"audit_licence": "p2"})
    report = watch.poll()
    assert not report.errors and len(report.opened) == 1
    assert watch.problems() == [] and len(events(product, "emergency.watch_recovered")) == 1
