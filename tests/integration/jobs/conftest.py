from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from policies.record import RequestRecord
from services.workflow.access import IntakeInput, Who
from tests.factories import PEOPLE
from tests.harness import Processes, Product, start_product

TEXT = {
    "sam": ("global-admin", "Fix the Conditional Access lockout that blocks every admin, INC0012345", "INC0012345"),
    "riley": ("user-admin", "Restore the deleted accounts of the finance team, INC0012347", "INC0012347"),
    "kai": ("global-admin", "Review the Conditional Access exclusions before the audit, INC0012348", "INC0012348"),
}


def submit(product: Product, alias: str, *, seconds: int = 30, entitlement: str | None = None,
           justification: str | None = None, ticket: str | None = None) -> RequestRecord:
    default_ent, default_text, default_ticket = TEXT[alias]
    person = PEOPLE[alias]
    form = IntakeInput(entitlement=entitlement or default_ent, duration_minutes=None,
                       justification=justification or default_text, ticket=ticket or default_ticket, target="",
                       duration_seconds=seconds)
    result = product.services.access.submit(Who(person.object_id, person.display_name), form,
                                            draft_id=uuid.uuid4().hex)
    assert result.accepted, (result.field_errors, result.problems)
    assert result.record is not None
    return result.record


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll real processes for an outcome (bounded); returns the condition's truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url, receipt_backoff_s=0.2)
    yield p
    p.stop()


@pytest.fixture()
def processes(product: Product, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(product.settings, tmp_path)
    yield procs
    procs.stop_all()
