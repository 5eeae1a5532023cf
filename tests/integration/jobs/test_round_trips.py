"""The approve path's Redis round trips: each step reads the audit head together with the record it is about to
describe, instead of in a round trip of its own (the click → Graph latency is mostly round trips)."""

from __future__ import annotations

from rq.utils import get_version

from policies.lifecycle import State
from policies.model import Verdict
from services.composition import Runtime, Services
from services.state import commit
from services.workflow.access import Who
from tests.conftest import RoundTrips
from tests.factories import PEOPLE
from tests.integration.jobs.conftest import submit


def test_an_approval_commits_its_change_event_and_job_in_one_round_trip(product):
    record = submit(product, "kai", seconds=1800)
    product.run_jobs()
    assert product.store.require(record.id).state is State.PENDING_APPROVAL
    counted = RoundTrips(product.runtime.redis.connection_pool)
    services = Services(Runtime(product.settings, clock=product.clock, client=counted))
    dana = PEOPLE["dana"]
    # Steady state: the first commit on a fresh Redis server loads the script (SCRIPT LOAD, then EVALSHA again);
    # every later one finds it cached, as in a running installation (and whatever ran before this test).
    product.runtime.redis.script_load(commit._COMMIT)
    get_version(counted)  # RQ asks the server's version once per client (cached on it), not per job
    counted.sent.clear()

    result = services.access.vote(record.id, Who(dana.object_id, dana.display_name), Verdict.APPROVE)
    assert result.changed and result.record.state is State.APPROVED
    # The record and the head in one read; then the compare-and-set, request.approved and the grant job in one
    # commit: two round trips before the job is in its queue (the counter comes after).
    assert counted.sent == ["MGET", "EVALSHA", "HINCRBYFLOAT"]
    assert product.services.queue.access_queue.job_ids == [f"grant_{record.id}"]

    counted.sent.clear()
    outcome = services.grants.activate(record.id)
    assert outcome.state == "active", outcome
    # the activation's start and grant.requested read the head with the record (the ledger hold between is one
    # pipeline)
    assert counted.sent[:4] == ["MGET", "EVALSHA", "PIPELINE", "EVALSHA"]
    assert product.runtime.audit.verify().ok
    events = [e.event for e in product.runtime.audit.for_request(record.id)]
    assert events[events.index("request.approved"):][:3] == ["request.approved", "grant.requested",
                                                             "grant.activated"]
