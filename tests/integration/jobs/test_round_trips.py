"""The approve path's Redis round trips: each step reads the audit head together with the record it is about to
describe, instead of in a round trip of its own (the click → Graph latency is mostly round trips)."""

from __future__ import annotations

from policies.lifecycle import State
from policies.model import Verdict
from services.composition import Runtime, Services
from services.workflow.access import Who
from tests.conftest import RoundTrips
from tests.factories import PEOPLE
from tests.integration.jobs.conftest import submit


def test_an_approval_and_its_grant_read_the_audit_head_with_the_record(product):
    record = submit(product, "kai", seconds=1800)
    product.run_jobs()
    assert product.store.require(record.id).state is State.PENDING_APPROVAL
    counted = RoundTrips(product.runtime.redis.connection_pool)
    services = Services(Runtime(product.settings, clock=product.clock, client=counted))
    dana = PEOPLE["dana"]

    result = services.access.vote(record.id, Who(dana.object_id, dana.display_name), Verdict.APPROVE)
    assert result.changed and result.record.state is State.APPROVED
    # the record and the head, the record's compare-and-set, the audit append (no GET of the head between)
    assert counted.sent[:3] == ["MGET", "EVALSHA", "EVALSHA"]

    counted.sent.clear()
    outcome = services.grants.activate(record.id)
    assert outcome.state == "active", outcome
    # the same for the activation's start and grant.requested (the ledger hold between is one pipeline)
    assert counted.sent[:3] == ["MGET", "EVALSHA", "EVALSHA"]
    assert product.runtime.audit.verify().ok
    events = [e.event for e in product.runtime.audit.for_request(record.id)]
    assert events[events.index("request.approved"):][:3] == ["request.approved", "grant.requested",
                                                             "grant.activated"]
