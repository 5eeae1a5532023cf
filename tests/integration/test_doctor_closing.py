"""`breakglass doctor` says whether the end of a grant can be closed (issue 19): the Graph app's consent to revoke
sessions and read the audit logs (from its token), and whether every webhook endpoint the policy names is
configured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.emulators.entra import DEFAULT_APP_ROLES, DEMO_GRAPH_CLIENT_ID
from services.ops.doctor import FAIL, OK, Doctor
from tests.harness import Product, start_product


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url)
    yield p
    p.stop()


def check(product: Product, name: str, **overrides: Any) -> tuple[str, str]:
    settings = product.settings.model_copy(update=overrides)
    [found] = [c for c in Doctor(settings).run() if c.name == name]
    return found.status, found.detail


def consent_without(product: Product, *missing: str) -> None:
    entra = product.emulators["entra"]
    with entra.lock:
        entra.clients[DEMO_GRAPH_CLIENT_ID].roles = [r for r in DEFAULT_APP_ROLES if r not in missing]


def test_green_when_sessions_can_be_revoked_and_the_logs_read(product):
    status, detail = check(product, "Sessions and audit logs")
    assert status == OK, detail


def test_each_missing_permission_is_named(product):
    consent_without(product, "User.RevokeSessions.All", "AuditLog.Read.All")
    status, detail = check(product, "Sessions and audit logs")
    assert status == FAIL and "User.RevokeSessions.All" in detail and "AuditLog.Read.All" in detail


def test_a_webhook_endpoint_the_policy_names_but_nobody_configured_fails(product, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(Path("policies/default.yaml").read_text().replace(
        "runbooks:\n  contain-affected-account:",
        "runbooks:\n  notify-soar:\n    kind: webhook\n    endpoint: soar\n  contain-affected-account:"))
    status, detail = check(product, "Runbook webhooks", policy_file=policy)
    assert status == FAIL and "soar" in detail and "BREAKGLASS_RUNBOOK_WEBHOOKS" in detail
    status, detail = check(product, "Runbook webhooks", policy_file=policy,
                           runbook_webhooks={"soar": "https://automation.example/webhooks/soar?token=x"},
                           runbook_webhook_secret="runbook-webhook-secret-0123456789abcdef")
    assert status == OK and "token" not in detail
