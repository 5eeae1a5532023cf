"""Who the benchmark's requests are for, and how its set-up work is done.

The demo tenant has ten people; grants need distinct targets (the shipped policy denies a second request for a
role already held), so the bench adds synthetic users to the Graph emulator's directory. Requests are made the
way the integration tests make them: Morgan (SecOps lead, caller of P1 incident INC0012346) asks for Security
Administrator *for* a synthetic user (`request_for_others`), the shipped policy sends that to the security leads,
and Dana approves. Submitting goes through `AccessService.submit` in the bench process (set-up, not measured);
what is measured happens in the product processes.

Synthetic *active grants* for the scale measurements (10k/100k grants) are written with the product's own store,
ledger, audit and job-queue code in the bench process ("store path"), not through Graph: see `synthetic_grants`.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis

from bench.env import BOT_APP_ID, BOT_APP_SECRET, GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, Product
from policies.lifecycle import State
from policies.model import GrantMode, Principal, Verdict
from policies.record import RequestRecord
from services.composition import Runtime, Services
from services.emulators.pim import instance_id
from services.emulators.seed import BY_ALIAS, demo_seed
from services.settings import Settings
from services.state import queue as jobs
from services.state.store import ID_ALPHABET, encode
from services.workflow.access import IntakeInput, Who
from services.workflow.activation import revoke_job_id

SECURITY_ADMIN = "194ae4cb-b126-40b2-bd5b-6091b380977d"
ENTITLEMENT = "security-admin"
TICKET = "INC0012346"
JUSTIFICATION = "Contain the suspected token theft on the finance mailbox and reset sessions, INC0012346"
MORGAN = BY_ALIAS["morgan"]  # requester (security-ops may request for others)
DANA = BY_ALIAS["dana"]  # approver (security leads)


def user_id(n: int) -> str:
    return f"eeeeeeee-0000-4000-8000-{n:012d}"


def user_upn(n: int) -> str:
    return f"bench{n}@contoso.example"


def synthetic_users(count: int, first: int = 1_000_000) -> range:
    """User numbers for synthetic grants: never in the Graph emulator's directory (the store path does not need
    them there), distinct from the seeded users that real grants use."""
    return range(first, first + count)


def bench_seed(users: int) -> dict[str, Any]:
    """The demo tenant plus `users` synthetic directory users, and the two app registrations (Graph client and
    the bot's own app, whose outbound Bot Connector tokens the bot and workers fetch)."""
    seed = copy.deepcopy(demo_seed())
    graph_users = seed["graph"]["users"]
    for n in range(1, users + 1):
        graph_users.append({
            "id": user_id(n), "displayName": f"Bench User {n}", "givenName": "Bench", "surname": f"User {n}",
            "userPrincipalName": user_upn(n), "mail": user_upn(n), "accountEnabled": True,
            "jobTitle": "Security Responder", "department": "Security Operations", "businessPhones": [],
            "mobilePhone": None, "officeLocation": None, "preferredLanguage": "en-US", "userType": "Member",
        })
    # Requests for others need an eligible target (policy: target_must_be_eligible): the bench's users are
    # security responders, in Security Operations like Jordan.
    security_ops = "11111111-0000-0000-0000-000000000003"
    memberships = seed["graph"].setdefault("memberships", {})
    memberships[security_ops] = [*memberships.get(security_ops, []), *(user_id(n) for n in range(1, users + 1))]
    seed["entra"] = {"clients": [
        {"client_id": GRAPH_CLIENT_ID, "secret": GRAPH_CLIENT_SECRET},
        {"client_id": BOT_APP_ID, "secret": BOT_APP_SECRET, "roles": []},
    ]}
    for key in ("tenant", "freshservice", "halo"):
        seed.pop(key, None)
    return seed


def settings_for(product: Product, extra: dict[str, str] | None = None) -> Settings:
    """The product's settings exactly as its processes read them from their environment."""
    import os

    env = product.base_env(extra or dict(product.env))
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings(_env_file=None)  # type: ignore[call-arg]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def bench_services(product: Product, client: redis.Redis | None = None) -> Services:
    settings = settings_for(product)
    import os

    os.environ["REQUESTS_CA_BUNDLE"] = str(product.emulators.ca_bundle)
    return Services(Runtime(settings, client=client or redis.Redis.from_url(product.redis_url, socket_timeout=120)))


def principal(n: int) -> Principal:
    return Principal(object_id=user_id(n), upn=user_upn(n), mail=user_upn(n), display_name=f"Bench User {n}")


def morgan() -> Principal:
    return Principal(object_id=MORGAN.object_id, upn=MORGAN.upn, mail=MORGAN.upn, display_name=MORGAN.display_name,
                     groups=frozenset({"11111111-0000-0000-0000-000000000003"}))


@dataclass
class Requests:
    """Set-up helpers on the bench's own `Services` (the product's code, in this process)."""

    services: Services

    def submit(self, n: int, seconds: int) -> RequestRecord:
        """A pending Security Administrator request for synthetic user n (approval needed)."""
        form = IntakeInput(entitlement=ENTITLEMENT, duration_minutes=None, justification=JUSTIFICATION, ticket=TICKET,
                           target=user_upn(n), duration_seconds=seconds)
        result = self.services.access.submit(Who(MORGAN.object_id, MORGAN.display_name), form,
                                             draft_id=uuid.uuid4().hex, requester=morgan())
        if not result.accepted or result.record is None:
            raise RuntimeError(f"bench request for user {n} refused: {result.field_errors} {result.problems}")
        if result.record.state is not State.PENDING_APPROVAL:
            raise RuntimeError(f"bench request {result.record.id} is {result.record.state}, expected pending")
        return result.record

    def approve(self, request_id: str) -> RequestRecord:
        """Dana's approval through the workflow (set-up path: the same `vote` the card click calls)."""
        result = self.services.access.vote(request_id, Who(DANA.object_id, DANA.display_name), Verdict.APPROVE)
        if result.record.state is not State.APPROVED:
            raise RuntimeError(f"approval of {request_id} left it {result.record.state}: {result.message}")
        return result.record


# --- synthetic active grants ("store path") ---------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticGrant:
    request_id: str
    principal_id: str
    ends_at: datetime
    assignment_id: str


_IDS = itertools.count(secrets.randbelow(len(ID_ALPHABET) ** 6 // 2))


def _synthetic_id() -> str:
    """Request ids in the product's format, from a counter: 100k random 6-character ids would collide a few
    hundred times (the birthday bound), silently overwriting records."""
    n = next(_IDS)
    chars = []
    for _ in range(6):
        n, digit = divmod(n, len(ID_ALPHABET))
        chars.append(ID_ALPHABET[digit])
    return "BG-" + "".join(reversed(chars))


def _active_record(template: RequestRecord, n: int, start: datetime, end: datetime, mode: GrantMode,
                   assignment_id: str) -> RequestRecord:
    """A clone of a real active grant's record (same history, votes and card copies, so the same size) for
    another target, id and window."""
    if template.state is not State.ACTIVE or template.grant is None:
        raise ValueError("the template must be a real active grant")
    request_id = _synthetic_id()
    target = principal(n)
    request = template.request.model_copy(update={"id": request_id, "target": target.object_id,
                                                  "duration": end - start, "created_at": start})
    grant = template.grant.model_copy(update={
        "request_id": request_id, "principal_id": target.object_id, "mode": mode, "generation": 1,
        "starts_at": start, "ends_at": end, "assignment_id": assignment_id})
    approvals = tuple(a.model_copy(update={"request_id": request_id}) for a in template.approvals)
    return template.model_copy(update={"id": request_id, "request": request, "target_name": target.display_name,
                                       "target_upn": target.upn, "approvals": approvals, "grant": grant,
                                       "created_at": start, "updated_at": start})


def synthetic_grants(services: Services, template: RequestRecord, users: Iterable[int],
                     ends: Iterable[datetime], *, mode: GrantMode, audit: bool = True, batch: int = 500,
                     real_time: Callable[[datetime], float] | None = None) -> Iterator[SyntheticGrant]:
    """Active grants written with the product's store/ledger/audit/queue code, skipping Graph and the workers.

    Per grant, exactly what the real path leaves behind for an active grant: the request record (with the
    transitions and the approval a real one has) and its indexes (written with RequestStore's own index code,
    pipelined), the ledger entry (holder + assignment, via the store's ledger methods), the scheduled revoke in
    rq-scheduler (created with rq-scheduler's own job code, pipelined) and, when `audit` is set, a copy of the
    template grant's audit trail (every event the real path appended for it, from submission to the receipts).
    Not copied: finished RQ jobs, which Redis keeps for an hour after a real activation (result_ttl).
    """
    store = services.runtime.store
    queue = services.queue
    scheduler = queue.scheduler
    now = services.runtime.clock.now()
    pending: list[tuple[RequestRecord, SyntheticGrant]] = []

    def flush() -> Iterator[SyntheticGrant]:
        pipe = store.redis.pipeline(transaction=False)
        for record, synthetic in pending:
            created = record.created_at.timestamp()
            pipe.set(store.keys.request(record.id), encode(record))
            pipe.zadd(store.keys.requester(record.request.requester), {record.id: created})
            pipe.zadd(store.keys.target(record.request.target), {record.id: created})
            store._index(pipe, None, record)
            assert record.grant is not None
            key = store.keys.ledger(record.grant.principal_id, SECURITY_ADMIN, "/")
            pipe.zadd(key + ":holders", {record.id: record.grant.ends_at.timestamp()})
            pipe.hset(key, mapping={"generation": 1, "assignment_id": synthetic.assignment_id, "mode": mode.value,
                                    "updated_at": now.isoformat()})
            pipe.sadd(store.keys.ledgers_with_assignment, key)
            jid = revoke_job_id(record.id, 1)
            when = (real_time(record.grant.ends_at) if real_time is not None
                    else services.runtime.clock.to_real(record.grant.ends_at).timestamp())
            job = scheduler._create_job(jobs.REVOKE_GRANT, args=(record.id, 1), commit=False, id=jid,
                                        timeout=120, result_ttl=3600, queue_name=queue.queue.name)
            job.save(pipeline=pipe)
            pipe.zadd(scheduler.scheduled_jobs_key, {jid: int(when)})
        pipe.execute()
        if audit:
            for record, _ in pending:
                _clone_trail(services, template, record)
        for _, synthetic in pending:
            yield synthetic
        pending.clear()

    for n, end in zip(users, ends, strict=False):
        start = now
        assignment = instance_id(SECURITY_ADMIN, user_id(n))
        record = _active_record(template, n, start, end, mode, assignment)
        pending.append((record, SyntheticGrant(record.id, user_id(n), end, assignment)))
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()


def _clone_trail(services: Services, template: RequestRecord, record: RequestRecord) -> None:
    """Append, for the synthetic grant, every audit event the real template grant has (same names, same data with
    the ids swapped): the audit trail of a real active grant, event for event."""
    audit = services.runtime.audit
    swaps = {template.id: record.id, template.request.target: record.request.target}
    for event in _trail(services, template):
        text = json.dumps(event.data)
        for old, new in swaps.items():
            text = text.replace(old, new)
        audit.append(event.event, actor=event.actor, request_id=record.id, data=json.loads(text))


_TRAILS: dict[str, list[Any]] = {}


def _trail(services: Services, template: RequestRecord) -> list[Any]:
    if template.id not in _TRAILS:
        _TRAILS[template.id] = services.runtime.audit.for_request(template.id)
    return _TRAILS[template.id]


def graph_assignments(grants: Iterable[SyntheticGrant], *, kind: str) -> list[dict[str, Any]]:
    """The Graph emulator's seed rows for synthetic grants, so their removal is a real Graph write."""
    return [{"principalId": g.principal_id, "roleDefinitionId": SECURITY_ADMIN, "directoryScopeId": "/",
             "kind": kind, "endDateTime": g.ends_at.isoformat() if kind == "pim" else None} for g in grants]


def ends_spread(start: datetime, count: int, over: timedelta) -> list[datetime]:
    step = over / max(1, count)
    return [start + step * i for i in range(count)]
