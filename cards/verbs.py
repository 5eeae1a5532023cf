"""The verbs a card can send back, and the only data a card carries.

Card data is never trusted: a click names a verb and an id, and the bot re-derives everything else from the
stored record. `terms` (the record's terms digest) only lets the bot refuse a vote cast on an outdated card.
"""

from __future__ import annotations

from enum import StrEnum


class Verb(StrEnum):
    REQUEST_SUBMIT = "request.submit"
    REQUEST_APPROVE = "request.approve"
    REQUEST_DENY = "request.deny"
    REQUEST_CANCEL = "request.cancel"
    REQUEST_REFRESH = "request.refresh"
    GRANT_DEACTIVATE = "grant.deactivate"
    GRANT_EXTEND = "grant.extend"
    EMERGENCY_TICK = "emergency.tick"  # an item of an emergency account's post-use checklist


# Keys of Action.Execute `data` (Action.Submit fallbacks carry the same keys plus "verb").
VERB_KEY = "verb"
REQUEST_ID = "requestId"
DRAFT_ID = "draftId"
TERMS = "terms"
INCIDENT_ID = "incidentId"
ITEM = "item"

# Ids of the inputs whose values arrive merged into the action data.
INPUT_ENTITLEMENT = "entitlement"
INPUT_DURATION = "duration"
INPUT_JUSTIFICATION = "justification"
INPUT_TICKET = "ticket"
INPUT_TARGET = "target"
INPUT_AFFECTED = "affected"  # the incident's affected account, for runbook steps
INPUT_REASON = "reason"  # deny reason
INPUT_COMMENT = "comment"  # an approver's optional comment on Approve
INPUT_MINUTES = "minutes"  # extension


def request_data(request_id: str, *, terms: str | None = None) -> dict[str, str]:
    data = {REQUEST_ID: request_id}
    if terms is not None:
        data[TERMS] = terms
    return data


def draft_data(draft_id: str) -> dict[str, str]:
    return {DRAFT_ID: draft_id}


def checklist_data(incident_id: str, item: str) -> dict[str, str]:
    return {INCIDENT_ID: incident_id, ITEM: item}
