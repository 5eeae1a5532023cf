"""`breakglass doctor` says whether the bot can reach an approver who never opened it (issue 17, section 2): the
Graph app's consented permissions for a proactive installation (read from its token) and the app in the org
catalog, against the emulators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.emulators.entra import DEMO_GRAPH_CLIENT_ID
from services.ops.doctor import FAIL, OK, WARN, Doctor
from tests.harness import Product, start_product


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url)
    yield p
    p.stop()


def check(product: Product, **overrides: Any) -> tuple[str, str]:
    settings = product.settings.model_copy(update=overrides)
    [found] = [c for c in Doctor(settings).run() if c.name == "Teams app install"]
    return found.status, found.detail


def consent(product: Product, *roles: str) -> None:
    entra = product.emulators["entra"]
    with entra.lock:
        entra.clients[DEMO_GRAPH_CLIENT_ID].roles = ["RoleAssignmentSchedule.ReadWrite.Directory", "User.Read.All",
                                                     "GroupMember.Read.All", *roles]


def test_green_with_the_permissions_and_the_app_in_the_catalog(product):
    status, detail = check(product)
    assert status == OK and "bbbbbbbb-0000-0000-0000-0000000000c1" in detail


def test_a_missing_install_permission_is_named(product):
    consent(product, "AppCatalog.Read.All")
    status, detail = check(product)
    assert status == FAIL and "TeamsAppInstallation.ReadWriteForUser.All" in detail


def test_the_self_permission_does_not_count_for_a_graph_app_other_than_the_bot(product):
    consent(product, "AppCatalog.Read.All", "TeamsAppInstallation.ReadWriteSelfForUser.All")
    status, detail = check(product)
    assert status == FAIL and "Self variant needs ENTRA_CLIENT_ID = MicrosoftAppId" in detail


def test_an_app_missing_from_the_org_catalog_is_reported(product):
    product.graph.set_state({"teams_apps": []})
    status, detail = check(product)
    assert status == FAIL and "no app with manifest id" in detail and "org app catalog" in detail


def test_switched_off_is_a_warning(product):
    status, detail = check(product, teams_proactive_install=False)
    assert status == WARN and "channel copy" in detail
