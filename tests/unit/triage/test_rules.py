"""RulesTriage: a table of phrases and what should be recognised in them."""

from __future__ import annotations

import pydantic
import pytest

from services.triage import RulesTriage, Suggestion
from services.triage.rules import find_duration, find_severity
from services.triage.text import words
from tests.unit.triage.conftest import load_policy

RULES = RulesTriage()
ANY = object()

# text -> the fields that must have these values (others are checked in the table below as None when listed)
CASES: list[tuple[str, dict[str, object]]] = [
    ("Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345",
     {"entitlement": "global-admin", "duration_minutes": 30, "ticket": "INC0012345", "severity": None,
      "target_upn": None, "least_privilege": None}),
    ("GA for half an hour INC0012345 sev1",
     {"entitlement": "global-admin", "duration_minutes": 30, "ticket": "INC0012345", "severity": 1}),
    ("need to reset a password for the CFO's assistant",
     {"entitlement": "helpdesk-admin", "least_privilege": None, "target_upn": None, "duration_minutes": None}),
    ("legal review of the vendor contract", {"entitlement": None, "least_privilege": None}),
    ("The legal team is blocked, Global Admin please", {"entitlement": "global-admin"}),
    ("Need security admin for 2h to investigate risky sign-in alerts, P2",
     {"entitlement": "security-admin", "duration_minutes": 120, "severity": 2}),
    ("sec admin 90 mins for the Defender incident", {"entitlement": "security-admin", "duration_minutes": 90}),
    ("CA admin for 1.5 hours to update a named location CHG0004567",
     {"entitlement": "conditional-access-admin", "duration_minutes": 90, "ticket": "CHG0004567"}),
    ("conditional access admin for an hour", {"entitlement": "conditional-access-admin", "duration_minutes": 60}),
    ("user admin 1h30 to create user accounts for new starters",
     {"entitlement": "user-admin", "duration_minutes": 90}),
    ("helpdesk admin for a quarter of an hour", {"entitlement": "helpdesk-admin", "duration_minutes": 15}),
    ("password admin 45 min please", {"entitlement": "helpdesk-admin", "duration_minutes": 45}),
    ("tenant admin for 2 hours, major incident with mail flow",
     {"entitlement": "global-admin", "duration_minutes": 120, "severity": 1}),
    ("company admin 30m, outage, inc-0012345",
     {"entitlement": "global-admin", "duration_minutes": 30, "severity": 1, "ticket": "INC-0012345"}),
    ("Global Administrator for 2 hours to reset a password, ritm0012345",
     {"entitlement": "global-admin", "least_privilege": "helpdesk-admin", "ticket": "RITM0012345"}),
    ("GA needed to change a CA policy", {"entitlement": "global-admin",
                                         "least_privilege": "conditional-access-admin"}),
    ("GA 2h severity 3", {"entitlement": "global-admin", "severity": 3}),
    ("Need global admin for alice@contoso.example for 1 hour",
     {"entitlement": "global-admin", "target_upn": "alice@contoso.example", "duration_minutes": 60}),
    ("Security Admin on behalf of Jordan.Reyes@Contoso.example during the incident",
     {"entitlement": "security-admin", "target_upn": "jordan.reyes@contoso.example"}),
    ("reset the password for bob@contoso.example", {"entitlement": "helpdesk-admin", "target_upn": None}),
    # two tasks: the role must cover both, so the larger of the two small roles
    ("assign licence to a new user and reset mfa", {"entitlement": "user-admin", "least_privilege": None}),
    ("Entra ID P2 licence question, user admin", {"entitlement": "user-admin", "severity": None}),
    ("high priority: security admin for 30 min", {"entitlement": "security-admin", "severity": 2}),
    ("user admin to onboard staff for a business-critical app", {"severity": None}),
    ("not GA, helpdesk admin is enough", {"entitlement": "helpdesk-admin"}),
    ("instead of Global Admin I'd take user admin", {"entitlement": "user-admin"}),
    ("please email ga@contoso.example about it", {"entitlement": None}),
    ("SR-1234 help desk admin for 8 hours", {"entitlement": "helpdesk-admin", "duration_minutes": 480,
                                              "ticket": "SR-1234"}),
    ("I need access for a couple of hours", {"entitlement": None, "duration_minutes": 120}),
    ("logged in 5 mins ago, need GA for 20 minutes", {"duration_minutes": 20}),
    ("GA on the Windows 10 machines", {"entitlement": "global-admin", "duration_minutes": None}),
    ("ＧＡ for ３０ minutes", {"entitlement": "global-admin", "duration_minutes": 30}),
    ("Global\u200b Admin for 1h", {"entitlement": "global-admin", "duration_minutes": 60}),
    ("gLoBaL-aDmIn for 1h", {"entitlement": "global-admin"}),
    ("APPROVED by admin. state: active. approved=true", {"entitlement": None, "duration_minutes": None,
                                                         "severity": None, "ticket": None}),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_phrases(text: str, expected: dict[str, object]) -> None:
    s = RULES.analyse(text, load_policy())
    assert s is not None
    assert s.source == "rules"
    got = {k: getattr(s, k) for k in expected}
    assert got == expected
    assert s.justification == text.replace("\u200b", "").strip()  # the requester's own words


async def test_suggest_is_the_async_face_of_analyse() -> None:
    text = "GA for half an hour INC0012345 sev1"
    assert await RULES.suggest(text, load_policy()) == RULES.analyse(text, load_policy())


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_text_gives_no_suggestion(text: str) -> None:
    assert RULES.analyse(text, load_policy()) is None


def test_notes_explain_what_was_recognised() -> None:
    s = RULES.analyse("reset a password for alice, need Global Admin for 1h, INC0012345, P1", load_policy())
    assert s is not None
    text = "\n".join(s.notes)
    assert "Global Administrator" in text
    assert "1 hour" in text
    assert "INC0012345" in text
    assert "P1" in text
    assert "Helpdesk Administrator would be enough for a password reset" in text


def test_task_subject_is_not_taken_as_target() -> None:
    s = RULES.analyse("need to unlock account for bob@contoso.example", load_policy())
    assert s is not None and s.target_upn is None
    assert any("bob@contoso.example" in n and "not used as target" in n for n in s.notes)


def test_justification_is_cleaned_and_trimmed() -> None:
    policy = load_policy()
    text = "  Need GA \u202e for   30m\u200b to fix the CA lockout  \n\n\n\n" + "x" * 5000
    s = RULES.analyse(text, policy)
    assert s is not None and s.justification is not None
    assert s.justification.startswith("Need GA for 30m to fix the CA lockout\n\nxxx")
    assert "\u202e" not in s.justification and "\u200b" not in s.justification
    assert len(s.justification) == policy.justification.max_length == 2000


def test_role_names_come_from_the_policy(policy) -> None:
    # An alias only counts when the policy has that role: no Exchange entitlement in the default policy.
    s = RULES.analyse("exchange admin for 1h", policy)
    assert s is not None and s.entitlement is None
    # A custom entitlement is recognised by its own display name and id.
    extra = policy.entitlements[0].model_copy(update={
        "id": "exchange-admin", "display_name": "Exchange Administrator",
        "role_template_id": "29232cdf-9323-42fd-ade2-1d097af3e4de", "lanes": []})
    custom = policy.model_copy(update={"entitlements": [*policy.entitlements, extra]})
    for text in ("Exchange Admin for 1h", "exchange-admin 1h", "EXO admin 1h"):
        s = RULES.analyse(text, custom)
        assert s is not None and s.entitlement == "exchange-admin", text


@pytest.mark.parametrize(("text", "minutes"), [
    ("30 minutes", 30), ("30 min", 30), ("30m", 30), ("30 mins", 30), ("2h", 120), ("2 hours", 120),
    ("2 hrs", 120), ("1.5 hours", 90), ("1,5 h", 90), ("0.25h", 15), ("an hour", 60), ("one hour", 60),
    ("half an hour", 30), ("a half hour", 30), ("half-hour", 30), ("90 mins", 90), ("1h30", 90),
    ("1h30m", 90), ("1h 30min", 90), ("1 hour 30 minutes", 90), ("1 hour and 30 minutes", 90),
    ("1:30h", 90), ("quarter of an hour", 15), ("a quarter hour", 15), ("three quarters of an hour", 45),
    ("an hour and a half", 90), ("one and a half hours", 90), ("2 hours and a half", 150), ("two hours", 120),
    ("thirty minutes", 30), ("a 45-minute window", 45), ("4 hours", 240), ("2 days", 2880),
    ("for the next 3 hours", 180), ("a couple of hours", 120),
])
def test_durations(text: str, minutes: int) -> None:
    found = find_duration(text)
    assert found is not None, text
    assert found[0] == minutes


@pytest.mark.parametrize("text", [
    "INC0012345", "Windows 10 machine", "P1", "5 mins ago", "version 2.5", "a 30mb file", "room 2h3",
    "0 minutes", "at 14:30", "24/7", "sev 1", "hourly job", "wait a minute",
])
def test_not_durations(text: str) -> None:
    assert find_duration(text) is None


@pytest.mark.parametrize(("text", "level"), [
    ("P1", 1), ("p1 incident", 1), ("sev1", 1), ("sev 1", 1), ("Sev-1", 1), ("severity 1", 1),
    ("priority 1", 1), ("critical", 1), ("major incident", 1), ("outage", 1), ("P2", 2), ("high priority", 2),
    ("severity: high", 2), ("sev-3", 3), ("medium priority", 3), ("P4", 4), ("low priority", 4),
    ("P3 but also an outage", 3),  # an explicit priority wins over words
    ("high priority and a major incident", 1),  # among words, the most severe
])
def test_severity(text: str, level: int) -> None:
    found = find_severity(words(text))
    assert found is not None, text
    assert found[0] == level


@pytest.mark.parametrize("text", [
    "high", "high privilege", "Entra ID P1", "azure ad p2 features", "P2 licence", "p1 licenses",
    "business-critical app", "mission critical", "no outage", "not critical", "P5", "sev 7", "legal", "",
])
def test_not_severity(text: str) -> None:
    assert find_severity(words(text)) is None


def test_suggestion_is_frozen_and_closed() -> None:
    s = Suggestion(source="rules")
    with pytest.raises(pydantic.ValidationError):
        s.entitlement = "global-admin"  # type: ignore[misc]
