"""Builders for domain objects in tests: the demo tenant's people and tickets, requests and records."""

from __future__ import annotations

from datetime import datetime, timedelta

from policies.document import PolicyDocument
from policies.engine import evaluate
from policies.lifecycle import Event
from policies.model import Actor, Facts, GrantRequest, Principal, TicketFacts
from policies.record import RequestRecord

GA = "global-admin"

G_IT_ADMINS = "11111111-0000-0000-0000-000000000001"
G_IDENTITY_ONCALL = "11111111-0000-0000-0000-000000000002"
G_SECOPS = "11111111-0000-0000-0000-000000000003"
G_SERVICE_DESK = "11111111-0000-0000-0000-000000000004"


def oid(n: int) -> str:
    return f"cccccccc-0000-0000-0000-{n:012d}"


PEOPLE = {
    "riley": Principal(object_id=oid(1), upn="riley@contoso.example", display_name="Riley Chen",
                       groups=frozenset({G_IT_ADMINS})),
    "dana": Principal(object_id=oid(2), upn="dana@contoso.example", display_name="Dana Whitfield"),
    "sam": Principal(object_id=oid(3), upn="sam@contoso.example", display_name="Sam Okafor",
                     groups=frozenset({G_IDENTITY_ONCALL})),
    "bo": Principal(object_id=oid(4), upn="bo@contoso.example", display_name="Bo Achterberg"),
    "jordan": Principal(object_id=oid(5), upn="jordan@contoso.example", display_name="Jordan Reyes",
                        groups=frozenset({G_SECOPS})),
    "morgan": Principal(object_id=oid(6), upn="morgan@contoso.example", display_name="Morgan Ellis",
                        groups=frozenset({G_SECOPS})),
    "kai": Principal(object_id=oid(7), upn="kai@contoso.example", display_name="Kai Lindqvist",
                     groups=frozenset({G_IDENTITY_ONCALL})),
    "alex": Principal(object_id=oid(8), upn="alex@contoso.example", display_name="Alex Novak",
                      groups=frozenset({G_SERVICE_DESK})),
    "breakglass": Principal(object_id=oid(9), upn="breakglass01@contoso.example", display_name="Break Glass 01"),
    "svc": Principal(object_id=oid(10), upn="svc-backup@contoso.example", display_name="svc-backup"),
}


def ticket(number: str = "INC0012345", *, priority: int = 1, caller: str | None = "sam@contoso.example",
           open_: bool = True, exists: bool = True, kind: str = "incident", group_members: frozenset[str] = frozenset(),
           assignee: str | None = None) -> TicketFacts:
    return TicketFacts(number=number, exists=exists, open=open_, kind=kind, priority=priority, caller=caller,
                       assignee=assignee, assignment_group="Identity On-Call",
                       assignment_group_members=group_members, state="In Progress" if open_ else "Closed")


def request(requester: str, *, target: str | None = None, entitlement: str = GA, minutes: int = 30,
            justification: str = "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345",
            ticket_ref: str | None = "INC0012345", at: datetime, rid: str = "BG-TEST01",
            lane: str | None = None) -> GrantRequest:
    return GrantRequest(id=rid, requester=PEOPLE[requester].object_id,
                        target=PEOPLE[target or requester].object_id, entitlement=entitlement,
                        duration=timedelta(minutes=minutes), justification=justification, ticket=ticket_ref,
                        created_at=at, lane=lane)


def facts(requester: str, *, target: str | None = None, ticket_facts: TicketFacts | None = None,
          **kw: object) -> Facts:
    return Facts(requester=PEOPLE[requester], target=PEOPLE[target or requester], ticket=ticket_facts, **kw)


def record_for(policy: PolicyDocument, req: GrantRequest, f: Facts, now: datetime) -> RequestRecord:
    """A stored-shape record after its first decision (pending, approved or denied)."""
    decision = evaluate(req, f, now, policy)
    base = RequestRecord(id=req.id, request=req, decision=decision, requester_name=f.requester.display_name,
                         target_name=f.target.display_name, created_at=now, updated_at=now)
    event = {"auto_approve": Event.AUTO_APPROVED, "needs_approval": Event.SENT_FOR_APPROVAL,
             "deny": Event.POLICY_DENIED}[decision.outcome.value]
    return base.apply(event, Actor.system("policy"), now, reason=decision.summary())
