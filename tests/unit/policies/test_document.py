from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.document import PolicyError, parse_policy, policy_json_schema

TEXT = Path("policies/default.yaml").read_text()


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "broken.yaml")
    return [p.render("broken.yaml") for p in err.value.problems]


def test_shipped_policy_is_valid():
    doc = parse_policy(TEXT)
    assert doc.schema_version == 1
    ga = doc.entitlement("global-admin")
    assert ga.role_template_id == "62e90394-69f5-4237-9190-012177145e10"
    assert ga.approval == "required"
    assert [la.id for la in ga.lanes] == ["break-glass"]


def test_over_24h_max_duration_names_file_path_and_line():
    broken = TEXT.replace("max_duration: 4h\n    approval: required\n    approvers: [identity-leads]\n    eligible: "
                          "[it-admins, identity-oncall]", "max_duration: 30h\n    approval: required\n    approvers: "
                          "[identity-leads]\n    eligible: [it-admins, identity-oncall]")
    assert broken != TEXT
    lines = problems_of(broken)
    assert len(lines) == 1
    line_no = broken.splitlines().index("    max_duration: 30h") + 1
    assert lines[0] == f"broken.yaml:{line_no}: entitlements[2].max_duration: must be ≤ 24h"


@pytest.mark.parametrize("old,new,expected", [
    ("eligible: [it-admins]\n", "eligible: [it-admns]\n", "entitlements[0].eligible[0]: unknown group 'it-admns'"),
    ("schema_version: 1", "schema_version: 2", "schema_version: Input should be 1"),
    ("timezone: Europe/Berlin\n    starts", "timezone: Europe/Berln\n    starts", "unknown timezone 'Europe/Berln'"),
    ("role_template_id: 62e90394-69f5-4237-9190-012177145e10", "role_template_id: global-admin",
     "entitlements[0].role_template_id: must be an Entra object id"),
    ("approvers: [security-leads]", "approvers: [secops-leads]", "unknown approver group 'secops-leads'"),
    ("on_call: secops-oncall", "on_call: nobody", "unknown rotation 'nobody'"),
    ("incident: 'INC-?\\d{4,10}'", "incident: 'INC(['", "invalid regular expression"),
    ("max_duration: 60m", "max_duration: 5h", "must be ≤ the entitlement's max_duration"),
    ("quorum: 1\n", "quorum: 0\n", "entitlements[0].quorum: Input should be greater than or equal to 1"),
    ("  max_active_per_principal: 2", "  max_active_per_principal: 2\n  surprise: true",
     "concurrency.surprise: Extra inputs are not permitted"),
])
def test_broken_policies_are_explained(old, new, expected):
    assert old in TEXT
    lines = problems_of(TEXT.replace(old, new, 1))
    assert any(expected in line for line in lines), lines
    assert all(line.startswith("broken.yaml:") for line in lines)


def test_invalid_yaml_reports_the_line():
    lines = problems_of("schema_version: 1\nentitlements: [\n")
    assert "not valid YAML" in lines[0] and lines[0].startswith("broken.yaml:")


def test_freeze_needs_a_range_or_a_weekly_window():
    broken = TEXT.replace("    start: 2026-12-21T00:00:00\n    end: 2027-01-04T08:00:00\n", "")
    assert any("give either start and end, or weekly" in line for line in problems_of(broken))


def test_json_schema_is_generated_from_the_models():
    schema = policy_json_schema()
    assert schema["title"] == "breakglass policy file"
    assert "entitlements" in schema["properties"]
    assert "Entitlement" in schema["$defs"]


def test_rotation_hands_over_at_the_same_local_hour_across_dst():
    doc = parse_policy(TEXT)
    rot = doc.rotations["identity-oncall"]
    # 2026-03-30 is the Monday after the switch to summer time: 09:00 local is 07:00 UTC.
    before = rot.on_call(datetime(2026, 3, 30, 6, 59, tzinfo=UTC)).name
    after = rot.on_call(datetime(2026, 3, 30, 7, 0, tzinfo=UTC)).name
    assert before != after


def test_weekly_window_across_midnight():
    text = TEXT.replace("""    start: 2026-12-21T00:00:00
    end: 2027-01-04T08:00:00
""", """    weekly: {days: [fri], start: "22:00", end: "02:00"}
""")
    freeze = parse_policy(text).freezes[0]
    assert freeze.active(datetime(2026, 11, 27, 21, 30, tzinfo=UTC))  # Fri 22:30 Berlin
    assert freeze.active(datetime(2026, 11, 28, 0, 30, tzinfo=UTC))  # Sat 01:30 Berlin
    assert not freeze.active(datetime(2026, 11, 28, 1, 30, tzinfo=UTC))  # Sat 02:30 Berlin
