"""Properties: RulesTriage never raises and never invents ids; prefill keeps every value within bounds."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import ticket_kind
from services.triage import PrefillResult, RulesTriage, Suggestion, max_minutes, prefill
from services.triage.text import looks_like_upn
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
