"""Issue 19 against the emulators, jobs run in-process: sessions end with a tier-0 role, runbook steps (the affected
account's sessions, a signed webhook) after the grant and after the revocation, what was done while elevated
collected at the end and again as Entra's late records arrive, the holder's expiry warning, the end notice in the
approvals channel; and every failure path (403 on revokeSignInSessions, a webhook that times out, 429 and no licence
on the audit logs, a lost step job) leaves the grant and its removal untouched."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from policies.lifecycle import State
from policies.record import RequestRecord
from services.emulators.fixture_files import response_of
from services.ops.devstack import free_port
from services.workflow.access import IntakeInput, Who
from services.workflow.followup import step_job_id
from tests.factories import PEOPLE
from tests.harness import EMULATORS, Product, start_product

SECRET = "runbook-webhook-secret-0123456789abcdef"
GA = "62e90394-69f5-4237-9190-012177145e10"
USER_ADMIN = """  - id: user-admin
    display_name: User Administrator
    role_template_id: fe930be7-5e62-47db-91af-98c3a49a38b1
    privilege: 40
    max_duration: 8h
"""
TEXT = {
    "sam": ("global-admin", "Fix the Conditional Access lockout that blocks every admin, INC0012345", "INC0012345"),
    "riley": ("user-admin", "Restore the deleted accounts of the finance team, INC0012347", "INC0012347"),
}


def write_policy(tmp_path: Path) -> Path:
    text = Path("policies/default.yaml").read_text()
    text = text.replace("runbooks:\n  contain-affected-account:", "runbooks:\n  notify-soar:\n    kind: webhook\n"
                        "    endpoint: soar\n    timeout: 1s\n    attempts: 2\n  end-grantee-sessions:\n"
                        "    kind: revoke_sessions\n    subject: grantee\n  contain-affected-account:")
    text = text.replace(USER_ADMIN, USER_ADMIN + "    runbooks:\n      after_grant: [contain-affected-account, "
                                                 "notify-soar]\n      after_revoke: [end-grantee-sessions]\n")
    # Helpdesk Administrator (not tier-0, no approval) calls the webhook shortly before its end.
    text = text.replace("    privilege: 30\n    max_duration: 8h\n", "    privilege: 30\n    max_duration: 8h\n"
                        "    runbooks:\n      before_revoke: [notify-soar]\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    port = free_port()
    p = start_product(tmp_path, redis_client, redis_url, emulators=[*EMULATORS, "automation"],
                      stack_config={"ports": {"automation": port}, "secrets": {"runbook_webhook_secret": SECRET}},
                      receipt_backoff_s=0.2, policy_file=write_policy(tmp_path),
                      runbook_webhooks={"soar": f"http://127.0.0.1:{port}/webhooks/soar?token=s3cret-token"},
                      runbook_webhook_secret=SECRET)
    yield p
    p.stop()


def submit(product: Product, alias: str, *, seconds: int, affected: str = "", entitlement: str | None = None,
           target: str = "", ticket: str | None = None, text: str | None = None) -> RequestRecord:
    default_ent, default_text, default_ticket = TEXT.get(alias, (None, None, None))
    person = PEOPLE[alias]
    form = IntakeInput(entitlement=entitlement or default_ent, duration_minutes=None,
                       justification=text or default_text or "", ticket=ticket or default_ticket or "", target=target,
                       duration_seconds=seconds, affected=affected)
    result = product.services.access.submit(Who(person.object_id, person.display_name), form,
                                            draft_id=uuid.uuid4().hex)
    assert result.accepted, (result.field_errors, result.problems)
    assert result.record is not None
    return result.record


def settle(product: Product, seconds: float = 0) -> None:
    """Time passes; the scheduler fires what is due, the reconciler starts due steps, the workers run it all."""
    if seconds:
        product.advance(seconds)
    for _ in range(3):
        product.run_jobs()
        product.services.reconciler.tick()
    product.run_jobs()


def events(product: Product, request_id: str, prefix: str = "") -> list[Any]:
    return [e for e in product.audit.for_request(request_id) if e.event.startswith(prefix)]


def names(product: Product, request_id: str) -> list[str]:
    return [e.event for e in product.audit.for_request(request_id)]


def channel(product: Product) -> str:
    return "\n".join(json.dumps(a["current"]) for a in product.connector.all_activities()
                     if a["conversationId"].startswith("19:"))


def revoked_users(product: Product) -> list[str]:
    return [r["userId"] for r in product.graph.state()["revocations"]]


def attachments(product: Product) -> dict[str, Any]:
    out = {}
    for row in product.servicenow.attachments():
        content = product.servicenow.attachment_content(row["sys_id"])
        out[row["file_name"]] = json.loads(content) if row["file_name"].endswith(".json") else content.decode()
    return out


# --- 1. sessions end with the role -------------------------------------------------------------------------------

def test_a_tier0_grant_ends_its_holders_sessions_after_the_removal_and_says_what_that_means(product):
    record = submit(product, "sam", seconds=600)
    settle(product)
    assert product.store.get(record.id).state is State.ACTIVE
    assert revoked_users(product) == []
    settle(product, 600)
    done = product.store.get(record.id)
    assert done.state is State.EXPIRED
    assert revoked_users(product) == [PEOPLE["sam"].object_id]
    trail = names(product, record.id)
    assert trail.index("grant.expired") < trail.index("grant.sessions_revoke_requested") < trail.index(
        "grant.sessions_revoked")
    revoked = events(product, record.id, "grant.sessions_revoked")[0]
    assert "access tokens already issued stay valid" in revoked.data["caveat"]
    assert done.step("sessions").status == "done"
    notes = product.servicenow.work_notes("INC0012345")
    note = next(n for n in notes if "Sign-in sessions of Sam Okafor revoked" in n)
    assert "access tokens already issued stay valid until they expire (60-90 minutes" in note
    assert "Continuous Access Evaluation" in note


def test_a_role_that_is_not_tier0_leaves_sessions_alone_by_default(product):
    record = submit(product, "riley", seconds=600)
    settle(product)
    settle(product, 600)
    done = product.store.get(record.id)
    assert done.state is State.EXPIRED and done.step("sessions") is None
    # riley's own sessions end only because the test policy's after_revoke runbook step asks for it
    assert done.step("rb-after_revoke-end-grantee-sessions").status == "done"


def test_a_403_on_revoking_sessions_alerts_and_shows_but_never_holds_up_the_removal(product):
    product.graph.add_fault(path="revokeSignInSessions", method="POST",
                            fixture="graph/error_403_authorization_request_denied.http.json")
    record = submit(product, "sam", seconds=600)
    settle(product)
    settle(product, 600)
    done = product.store.get(record.id)
    assert done.state is State.EXPIRED
    assert [i for i in product.graph.instances() if i["principalId"] == record.request.target] == []
    step = done.step("sessions")
    assert step.status == "failed" and "403" in step.detail and "Authorization_RequestDenied" in step.detail
    assert events(product, record.id, "grant.sessions_revoke_failed")
    assert "Follow-up step failed" in channel(product)
    assert any("could NOT be revoked" in n for n in product.servicenow.work_notes("INC0012345"))
    # The removal was audited before the sessions were even tried.
    trail = names(product, record.id)
    assert trail.index("grant.expired") < trail.index("grant.sessions_revoke_failed")


def test_deactivating_ends_sessions_and_the_channel_hears_who_held_what_and_how_it_ended(product):
    record = submit(product, "sam", seconds=1800)
    settle(product)
    sam = PEOPLE["sam"]
    product.services.access.deactivate(record.id, Who(sam.object_id, sam.display_name))
    settle(product)
    done = product.store.get(record.id)
    assert done.state is State.REVOKED and done.step("sessions").status == "done"
    notice = next(a for a in product.connector.all_activities() if a["conversationId"].startswith("19:")
                  and "Access ended" in json.dumps(a["current"]))
    text = json.dumps(notice["current"])
    for words in ("Sam Okafor", "Global Administrator", "deactivated by Sam Okafor", "revoked at",
                  "access tokens already issued", "Directory actions collected so far"):
        assert words in text, words
    assert events(product, record.id, "grant.end_announced")


# --- 2. runbook steps ------------------------------------------------------------------------------------------

def test_after_the_grant_the_affected_accounts_sessions_end_and_a_signed_webhook_goes_out(product):
    record = submit(product, "riley", seconds=1200, affected="alex@contoso.example")
    assert record.affected is not None and record.affected.object_id == PEOPLE["alex"].object_id
    settle(product)
    active = product.store.get(record.id)
    assert active.state is State.ACTIVE
    assert revoked_users(product) == [PEOPLE["alex"].object_id]
    assert active.step("rb-after_grant-contain-affected-account").status == "done"
    webhook = active.step("rb-after_grant-notify-soar")
    assert webhook.status == "done" and "202" in webhook.detail
    [delivery] = product.emulators["automation"].deliveries()
    assert delivery["signature_valid"] is True and delivery["hook"] == "soar"
    body = delivery["body"]
    assert body["request_id"] == record.id and body["role"] == "User Administrator" and body["phase"] == "after_grant"
    assert body["ticket"] == "INC0012347" and body["starts_at"] and body["ends_at"]
    assert body["target"]["upn"] == "riley@contoso.example"
    assert body["affected_account"]["upn"] == "alex@contoso.example"
    assert "justification" not in json.dumps(body)
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    stamp = delivery["headers"]["X-Breakglass-Timestamp"]
    assert delivery["headers"]["X-Breakglass-Signature"] == "sha256=" + hmac.new(
        SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert [e.event for e in events(product, record.id, "runbook.")] == [
        "runbook.step_requested", "runbook.step_completed", "runbook.step_requested", "runbook.step_completed"]
    notes = product.servicenow.work_notes("INC0012347")
    assert any("revoke the affected account's sessions" in n and "done" in n for n in notes)
    # The requester's card shows the steps.
    cards = [json.dumps(a["current"]) for a in product.connector.all_activities() if record.id in json.dumps(a)]
    assert any("Follow-up" in c and "delivered (HTTP 202)" in c for c in cards)
    settle(product, 1200)
    ended = product.store.get(record.id)
    assert ended.state is State.EXPIRED and revoked_users(product)[-1] == PEOPLE["riley"].object_id


def test_a_webhook_that_times_out_is_retried_then_fails_alerts_and_leaves_the_grant_alone(product):
    product.emulators["automation"].add_fault(path="/webhooks/soar", method="POST", latency_ms=2500, times=5)
    record = submit(product, "riley", seconds=1800)
    settle(product)
    first = product.store.get(record.id).step("rb-after_grant-notify-soar")
    assert first.status == "queued" and first.attempt == 2 and "timeout" in first.detail
    settle(product, 60)
    failed = product.store.get(record.id)
    step = failed.step("rb-after_grant-notify-soar")
    assert step.status == "failed" and "after 2 attempt" in step.detail
    assert failed.state is State.ACTIVE and failed.grant.ends_at == product.store.get(record.id).grant.ends_at
    assert "Follow-up step failed" in channel(product)
    assert [e.event for e in events(product, record.id, "runbook.step_")].count("runbook.step_retry") == 1
    # No affected account was named: that step was skipped, not failed.
    assert failed.step("rb-after_grant-contain-affected-account").status == "skipped"


def test_a_before_revoke_step_runs_shortly_before_the_end_and_never_holds_up_an_early_revocation(product):
    deliveries = product.emulators["automation"].deliveries
    record = submit(product, "riley", seconds=1200, entitlement="helpdesk-admin",
                    text="Reset the MFA of the finance team's shared mailbox owner, INC0012347")
    settle(product)
    step = product.store.get(record.id).step("rb-before_revoke-notify-soar")
    assert step.status == "scheduled" and step.due_at == product.store.get(record.id).grant.ends_at - timedelta(
        seconds=60)
    settle(product, 1200 - 70)
    assert deliveries() == []
    settle(product, 15)
    [delivery] = deliveries()
    assert delivery["body"]["phase"] == "before_revoke" and delivery["body"]["state"] == "active"
    settle(product, 60)
    assert product.store.get(record.id).state is State.EXPIRED
    # Deactivated long before its end: the revocation goes first, the step runs right after it, and says so.
    second = submit(product, "riley", seconds=1200, entitlement="helpdesk-admin",
                    text="Reset the MFA of the finance team's shared mailbox owner again, INC0012347")
    settle(product)
    riley = PEOPLE["riley"]
    product.services.access.deactivate(second.id, Who(riley.object_id, riley.display_name))
    settle(product)
    done = product.store.get(second.id)
    assert done.state is State.REVOKED
    late = done.step("rb-before_revoke-notify-soar")
    assert late.status == "done" and deliveries()[-1]["body"]["request_id"] == second.id
    trail = names(product, second.id)
    assert trail.index("grant.revoked") < trail.index("runbook.step_requested")


def test_a_step_against_a_tier0_holder_is_refused(product):
    product.graph.add_assignment(PEOPLE["dana"].object_id, GA, kind="direct")
    record = submit(product, "riley", seconds=1200, affected="dana@contoso.example")
    settle(product)
    step = product.store.get(record.id).step("rb-after_grant-contain-affected-account")
    assert step.status == "refused" and "Global Administrator" in step.detail
    assert PEOPLE["dana"].object_id not in revoked_users(product)
    assert events(product, record.id, "runbook.step_refused")


def test_a_denylisted_affected_account_is_refused_on_the_form(product):
    riley = PEOPLE["riley"]
    form = IntakeInput(entitlement="user-admin", duration_minutes=20, ticket="INC0012347", target="",
                       justification="Restore the deleted accounts of the finance team, INC0012347",
                       affected="breakglass01@contoso.example")
    result = product.services.access.submit(Who(riley.object_id, riley.display_name), form, draft_id="d1")
    assert not result.accepted and "denylist" in result.field_errors["affected"]


def test_the_affected_account_comes_from_the_ticket_when_the_form_names_none(tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url, itsm_affected_field="u_affected_user")
    try:
        record = submit(product, "morgan", seconds=1800, entitlement="security-admin",
                        target="jordan@contoso.example", ticket="INC0012346",
                        text="Security Admin for the on-call responder to contain the token theft, INC0012346")
        assert record.affected is not None and record.affected.source == "ticket"
        assert record.affected.upn == "alex@contoso.example"
        settle(product)
        assert product.store.get(record.id).state is State.ACTIVE
        assert revoked_users(product) == [PEOPLE["alex"].object_id]
    finally:
        product.stop()


# --- 3. what was done while elevated ------------------------------------------------------------------------

def audit_row(n: int, at: str, user: str, visible_at: str | None = None) -> dict:
    row = dict(response_of("graph/directory_audits_filter_user_window.http.json")[2]["value"][0])
    row = {**row, "id": f"Directory_{n}", "activityDateTime": at, "activityDisplayName": f"Update user {n}",
           "initiatedBy": {"app": None, "user": {**row["initiatedBy"]["user"], "id": user}}}
    if visible_at:
        row["_visibleAt"] = visible_at
    return row


def test_activity_is_collected_at_the_end_and_again_as_late_records_arrive_then_final(product):
    record = submit(product, "sam", seconds=600)
    settle(product)
    grant = product.store.get(record.id).grant
    sam = PEOPLE["sam"].object_id
    during = (grant.starts_at + timedelta(minutes=2)).isoformat()
    late_visible = (grant.ends_at + timedelta(minutes=4)).isoformat()
    product.graph.set_state({"directory_audits": [audit_row(1, during, sam),
                                                  audit_row(2, during, sam, visible_at=late_visible),
                                                  audit_row(3, during, PEOPLE["dana"].object_id)]})
    settle(product, 600)
    collected = events(product, record.id, "grant.activity_collected")
    assert [(e.data["pass"], e.data["directory_actions"], e.data["final"]) for e in collected] == [(0, 1, False)]
    packs = attachments(product)
    first = packs[f"breakglass-{record.id}-activity-0.json"]
    assert first["activity"]["digest"] == collected[0].data["digest"]
    assert [r["id"] for r in first["activity"]["directory_audits"]["rows"]] == ["Directory_1"]
    assert "Update user 1" in packs[f"breakglass-{record.id}-activity-0.md"]
    settle(product, 5 * 60)
    second = events(product, record.id, "grant.activity_collected")[-1]
    assert (second.data["pass"], second.data["directory_actions"], second.data["new"]) == (1, 2, 1)
    assert f"breakglass-{record.id}-activity-1.json" in attachments(product)
    settle(product, 10 * 60)
    assert events(product, record.id, "grant.activity_collected")[-1].data["pass"] == 2
    assert f"breakglass-{record.id}-activity-2.json" not in attachments(product)  # nothing new: no new pack
    settle(product, 45 * 60)
    last = events(product, record.id, "grant.activity_collected")[-1]
    assert last.data["pass"] == 3 and last.data["final"] is True
    final = attachments(product)[f"breakglass-{record.id}-activity-3-final.json"]
    assert final["activity"]["final"] is True and final["activity"]["digest"] == last.data["digest"]
    assert product.store.get(record.id).state is State.EXPIRED


def test_429_and_no_licence_on_the_audit_logs_are_said_plainly_and_never_touch_the_grant(product):
    product.graph.set_state({"audit_licence": "free"})
    product.graph.add_fault(path="/v1.0/auditLogs/directoryAudits", method="GET", status=429,
                            headers={"Retry-After": "0.01"}, times=30)
    record = submit(product, "sam", seconds=600)
    settle(product)
    settle(product, 600)
    first = events(product, record.id, "grant.activity_collected")[0]
    assert first.data["directory_status"] == "throttled" and first.data["sign_in_status"] == "licence"
    pack = attachments(product)[f"breakglass-{record.id}-activity-0.md"].replace("\\", "")
    assert "no Entra ID P1 or P2 licence" in pack and "429" in pack
    product.graph.faults.clear()
    settle(product, 5 * 60)
    later = events(product, record.id, "grant.activity_collected")[-1]
    assert later.data["directory_status"] == "ok"
    done = product.store.get(record.id)
    assert done.state is State.EXPIRED and done.failure is None


# --- 4. the person holding the role ----------------------------------------------------------------------------

def test_the_holder_is_warned_once_before_the_end_with_extend_and_deactivate(product):
    record = submit(product, "sam", seconds=1800)
    settle(product)
    warn = product.store.get(record.id).step("warn")
    assert warn.status == "scheduled" and warn.due_at == product.store.get(record.id).grant.ends_at - timedelta(
        minutes=10)
    settle(product, 19 * 60)
    assert warnings_to(product, record.id) == []
    settle(product, 61)
    warnings = warnings_to(product, record.id)
    assert len(warnings) == 1
    card = json.dumps(warnings[0]["versions"][0]["activity"])
    assert "grant.deactivate" in card and "grant.extend" in card and "in 10 minutes" in card
    assert "Ending soon" in json.dumps(warnings[0]["current"])
    # The warning's card is a stored copy: its buttons are bound to it.
    assert any(c.activity_id == warnings[0]["id"] for c in product.store.get(record.id).cards)
    # Sam never wrote to the bot: the warning reached him through the app installed for him (his new 1:1 chat).
    assert PEOPLE["sam"].object_id in warnings[0]["conversationId"]
    settle(product, 60)
    assert len(warnings_to(product, record.id)) == 1
    assert len(events(product, record.id, "grant.expiry_warned")) == 1


def warnings_to(product: Product, request_id: str) -> list[dict]:
    """Messages whose first version was the warning (later card updates re-render the card, which says "Ending
    soon" while the grant lasts)."""
    return [a for a in product.connector.all_activities()
            if request_id in json.dumps(a["versions"][0]) and "ends at" in json.dumps(a["versions"][0])]


def test_no_warning_for_a_grant_shorter_than_twice_the_lead(product):
    record = submit(product, "sam", seconds=15 * 60)
    settle(product)
    assert product.store.get(record.id).step("warn") is None


# --- nothing stranded -------------------------------------------------------------------------------------------

def test_a_lost_step_job_is_redriven_by_the_reconciler(product):
    record = submit(product, "sam", seconds=600)
    settle(product)
    product.advance(600)
    product.services.grants.revoke(record.id, product.store.get(record.id).grant.generation)
    product.services.followups.plan(record.id, "ended")  # the sessions step is queued
    jid = step_job_id(record.id, "sessions", 1)
    assert product.services.queue.pending(jid)
    product.services.queue.cancel(jid)  # lost with its worker
    product.runtime.redis.lrem("rq:queue:breakglass", 0, jid)
    product.run_jobs()
    assert product.store.get(record.id).step("sessions").status == "queued"
    assert revoked_users(product) == []
    settle(product, 10)
    assert product.store.get(record.id).step("sessions").status == "done"
    assert any(e.data.get("job") == jid for e in events(product, record.id, "job.redriven"))
