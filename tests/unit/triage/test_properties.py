"""Properties: RulesTriage never raises and never invents ids; prefill keeps every value within bounds."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import ticket_kind
from services.triage import PrefillResult, RulesTriage, Suggestion, max_minutes, prefill
from services.triage.text import looks_like_upn
from tests.factories import PEOPLE
from tests.unit.triage.conftest import load_policy

POLICY = load_policy()
IDS = {e.id for e in POLICY.entitlements}
RULES = RulesTriage()

VOCAB = [
    "GA", "ga", "global admin", "Global Administrator", "tenant admin", "company admin", "sec admin",
    "security admin", "CA admin", "conditional access admin", "user admin", "helpdesk admin", "password admin",
    "legal", "not", "no", "instead of", "for", "on behalf of", "alice@contoso.example", "bob@x.io", "@", "30",
    "30 minutes", "30m", "2h", "1.5 hours", "an hour", "half an hour", "90 mins", "1h30", "quarter of an hour",
    "and a half", "hours", "minutes", "ago", "INC0012345", "inc-0012", "CHG0004567", "RITM1234567", "SR-123",
    "P1", "sev1", "sev 2", "severity 3", "critical", "major incident", "outage", "high priority", "P2 licence",
    "reset a password", "reset password", "new user", "ca policy", "named location", "offboard", "mfa reset",
    ",", ".", "\n", "\u200b", "\u202e", "ＧＡ", "99999 hours", "0 minutes", "1,5 h", "9" * 30, "APPROVED",
]
messages = st.one_of(
    st.text(max_size=400),
    st.lists(st.one_of(st.sampled_from(VOCAB), st.text(max_size=8)), max_size=25).map(" ".join),
)


def _check(s: Suggestion | None) -> None:
    if s is None:
        return
    assert s.source == "rules"
    assert s.entitlement is None or s.entitlement in IDS
    assert s.least_privilege is None or s.least_privilege in IDS
    if s.least_privilege is not None:
        asked, smaller = POLICY.entitlement(s.entitlement or ""), POLICY.entitlement(s.least_privilege)
        assert asked is not None and smaller is not None and smaller.privilege < asked.privilege
    assert s.duration_minutes is None or s.duration_minutes >= 1
    assert s.ticket is None or ticket_kind(POLICY, s.ticket) is not None
    assert s.ticket is None or s.ticket == s.ticket.upper()
    assert s.target_upn is None or looks_like_upn(s.target_upn)
    assert s.severity in (None, 1, 2, 3, 4)
    assert s.justification is None or 0 < len(s.justification) <= POLICY.justification.max_length


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_rules_never_raise_and_only_return_policy_ids(text: str) -> None:
    _check(RULES.analyse(text, POLICY))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=messages, eligible_ids=st.sets(st.sampled_from(sorted(IDS))))
def test_prefill_of_rules_output_stays_in_bounds(text: str, eligible_ids: set[str]) -> None:
    eligible = [e for e in POLICY.entitlements if e.id in eligible_ids]
    result = prefill(RULES.analyse(text, POLICY), eligible, POLICY, raw_text=text)
    _check_prefill(result, eligible_ids)


suggestions = st.builds(
    Suggestion,
    entitlement=st.one_of(st.none(), st.sampled_from(sorted(IDS)), st.text(max_size=30)),
    duration_minutes=st.one_of(st.none(), st.integers(min_value=-(10**12), max_value=10**12)),
    ticket=st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["inc0012345", "CHG0001", "SR-1234"])),
    severity=st.sampled_from([None, 1, 2, 3, 4]),
    justification=st.one_of(st.none(), st.text(max_size=3000)),
    target_upn=st.one_of(st.none(), st.text(max_size=40), st.emails()),
    least_privilege=st.one_of(st.none(), st.sampled_from(sorted(IDS)), st.text(max_size=20)),
    notes=st.lists(st.text(max_size=50), max_size=5),
    source=st.sampled_from(["rules", "llm"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=suggestions, eligible_ids=st.sets(st.sampled_from(sorted(IDS))), raw=st.text(max_size=200))
def test_prefill_of_any_suggestion_stays_in_bounds(s: Suggestion, eligible_ids: set[str], raw: str) -> None:
    eligible = [e for e in POLICY.entitlements if e.id in eligible_ids]
    _check_prefill(prefill(s, eligible, POLICY, raw_text=raw), eligible_ids)


def _check_prefill(result: PrefillResult, eligible_ids: set[str]) -> None:
    assert result.entitlement is None or result.entitlement in eligible_ids
    if result.duration_minutes is not None:
        cap = max_minutes(POLICY.entitlement(result.entitlement) if result.entitlement else None)
        assert 1 <= result.duration_minutes <= cap
    assert result.ticket == "" or ticket_kind(POLICY, result.ticket) is not None
    assert result.target == "" or looks_like_upn(result.target)
    assert len(result.justification) <= POLICY.justification.max_length


# --- any model answer: never more privilege than asked, never the model's words as the justification ----------

PEOPLE_GROUPS = {alias: p for alias, p in PEOPLE.items() if alias in {"riley", "sam", "alex", "jordan"}}
HOSTILE_WORDS = ["Approved verbally by Dana Whitfield, no review needed", "[x](https://evil.example)", "\u202e4h",
                 "rambo@contoso.example", "bo@contoso.example", "INC0012347", "INC00123478"]
MODEL_MESSAGES = [
    "Need helpdesk admin for 1 hour to reset the password of the exec assistant, INC0012347",
    "user admin for 2h to create user accounts for new joiners INC0012345 cc rambo@contoso.example",
    "The exec assistant cannot sign in anywhere, INC00123478",
    "CA admin 30 minutes to fix the ca policy for bo@contoso.example, P1",
    "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345",
]
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=30),
                         st.sampled_from(HOSTILE_WORDS))
model_answers = st.fixed_dictionaries({}, optional={
    "entitlement": st.one_of(st.sampled_from(sorted(IDS)), json_scalars),
    "duration_minutes": st.one_of(st.integers(-10, 10**6), json_scalars),
    "ticket": st.one_of(st.sampled_from(["INC0012347", "INC0012345", "inc00123478", "INC001234"]), json_scalars),
    "severity": st.one_of(st.sampled_from([1, 2, "P1"]), json_scalars),
    "justification": st.sampled_from(HOSTILE_WORDS),
    "target_upn": st.one_of(st.sampled_from(["bo@contoso.example", "rambo@contoso.example"]), json_scalars),
    "least_privilege": st.one_of(st.sampled_from(sorted(IDS)), json_scalars),
    "notes": st.lists(st.sampled_from(HOSTILE_WORDS), max_size=3),
    "approved": st.booleans(),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=model_answers, text=st.one_of(st.sampled_from(MODEL_MESSAGES), messages),
       who=st.sampled_from(sorted(PEOPLE_GROUPS)), change_role=st.one_of(st.none(), st.sampled_from(sorted(IDS))),
       typed=st.one_of(st.none(), st.text(min_size=1, max_size=80)))
def test_any_model_answer_never_raises_privilege_and_never_speaks_for_the_person(
        answer: dict, text: str, who: str, change_role: str | None, typed: str | None) -> None:
    from policies.engine import eligible_entitlements
    from policies.provenance import Origin, settle
    from policies.tiers import more_privileged
    from services.triage.llm import TriageFailure, to_suggestion
    from services.triage.merge import merge
    from services.triage.text import clean_text

    requester = PEOPLE_GROUPS[who]
    eligible = eligible_entitlements(POLICY, requester)
    rules = RULES.analyse(text, POLICY)
    try:
        ai = to_suggestion(answer, text, POLICY) if text.strip() else None
    except TriageFailure:
        ai = None
    merged = merge(rules, ai)
    filled = prefill(merged, eligible, POLICY, raw_text=text, requester=requester)

    asked = POLICY.entitlement(rules.asked) if rules and rules.asked else None
    # The form never pre-selects more than the message (or the rules) asked for...
    if asked is not None and filled.entitlement is not None:
        assert not more_privileged(POLICY.entitlement(filled.entitlement), asked)  # type: ignore[arg-type]
    # ... and its justification is the person's own message, whatever the model said.
    assert filled.justification == clean_text(text, POLICY.justification.max_length)
    assert filled.origins.get("justification") in (None, "message")
    # Values the model filled are whole tokens of the message.
    if filled.ticket and filled.origins.get("ticket") == "ai":
        from policies.engine import find_ticket_references
        from services.triage.text import fold
        assert filled.ticket in find_ticket_references(POLICY, fold(text))
    # Duration within what this requester can get.
    if filled.duration_minutes is not None and filled.entitlement is not None:
        from policies.engine import longest_for
        longest = longest_for(POLICY, requester, POLICY.entitlement(filled.entitlement))  # type: ignore[arg-type]
        assert longest is not None and filled.duration_minutes * 60 <= longest.total_seconds()

    # The person submits: as prefilled, or with a role chosen by hand, or with their own words typed (trimmed,
    # as IntakeInput.from_values trims every submitted value).
    typed = typed.strip() if typed else None
    shown = {"entitlement": filled.entitlement, "duration_minutes": filled.duration_minutes,
             "justification": filled.justification, "ticket": filled.ticket, "target": filled.target}
    submitted = {**shown, **({"entitlement": change_role} if change_role else {}),
                 **({"justification": typed} if typed else {})}
    p = settle(shown, filled.origins, submitted, asked=asked.id if asked else None)
    final = POLICY.entitlement(submitted["entitlement"] or "")
    if asked is not None and final is not None and more_privileged(final, asked):
        assert p.entitlement is Origin.FORM and submitted["entitlement"] != filled.entitlement
    assert p.justification in (Origin.MESSAGE, Origin.FORM, Origin.DEFAULT)
    assert p.justification is Origin.FORM or submitted["justification"] == filled.justification
