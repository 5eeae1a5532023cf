"""Extensions through the real aiohttp app and botbuilder, real Redis and the emulators (jobs in-process): the person
who clicks Extend is the extension's requester (recorded, shown, policy run for them) and the original requester
is told; an extension that cannot be applied before the end is refused with a clear answer, and one that loses the
race with the end anyway fails loudly (audited, the requester told), never silently."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.lifecycle import State
from policies.model import Verdict
from services.workflow.access import IntakeInput, Who
from tests.harness import Product, person, start_product
from tests.integration.bot.conftest import Teams, card_of, texts
from tests.integration.bot.test_flows import SAM_TEXT, intake, only_request, submit
from tests.resilience.conftest import policy_file
from tests.resilience.test_approval_integrity import playing
from tests.teams_activities import message


def holder_policy(directory: Path) -> Path:
    """The shipped policy, except that a requester need not be on the ticket and Security Administrator has only its
    standard path (no SecOps-only lane), so that the policy lets the holder extend too: it runs for whoever asks."""
    path = policy_file(directory)
    data = yaml.safe_load(path.read_text())
    data["tickets"]["requester_must_be_involved"] = False
    next(e for e in data["entitlements"] if e["id"] == "security-admin")["lanes"] = []
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url, policy_file=holder_policy(tmp_path))
    yield p
    p.stop()


async def say(teams: Teams, alias: str, text: str) -> str:
    before = len(teams.sent_to(alias))
    status, _ = await teams.post(message(alias, text, teams.product.service_url))
    assert status == 201
    return "\n".join(texts(card_of(a)) for a in teams.sent_to(alias)[before:])


def security_admin_for_riley(product: Product) -> Any:
    """Jordan asks Security Administrator for Riley during a security incident; Morgan approves; it is active."""
    form = IntakeInput(entitlement="security-admin", duration_minutes=60, ticket="INC0012346",
                       justification="Contain the token theft on the finance mailbox with Riley's help",
                       target=person("riley").upn)
    result = product.services.access.submit(Who(person("jordan").object_id, "Jordan Reyes"), form, draft_id="d1")
    assert result.record is not None and result.record.state is State.PENDING_APPROVAL, result.problems
    vote = product.services.access.vote(result.record.id, Who(person("morgan").object_id, "Morgan Ellis"),
                                        Verdict.APPROVE)
    assert vote.changed
    product.run_jobs()
    record = product.store.get(result.record.id)
    assert record.state is State.ACTIVE and record.request.target == person("riley").object_id
    return record


async def test_the_holder_who_extends_is_the_extensions_requester_and_the_requester_is_told(product):
    async with playing(product) as teams:
        await teams.install_in_team()
        for alias in ("jordan", "morgan", "riley"):
            await say(teams, alias, "help")
        grant = security_admin_for_riley(product)
        answer = await say(teams, "riley", f"extend {grant.id} 60")
        assert "waiting for approval" in answer, answer
        product.run_jobs()
        extension = next((r for r in product.store.by_requester(person("riley").object_id) if r.request.extends),
                         None)
        assert extension is not None, "the extension is not recorded as Riley's, who asked for it"
        assert extension.request.extends == grant.id
        assert (extension.request.requester, extension.requester_name) == (person("riley").object_id, "Riley Chen")
        assert extension.request.target == person("riley").object_id
        submitted = [e for e in product.audit.for_request(extension.id) if e.event == "request.submitted"]
        assert submitted[0].actor == submitted[0].data["requester"] == person("riley").object_id
        # The approver's card says who asked, and that they hold the role.
        shown = texts(card_of(teams.card_with("morgan", "request.approve", extension.id)[0]))
        assert "asked by Riley Chen, who holds the role" in shown, shown
        assert "Jordan Reyes" not in shown.split("Justification")[0]
        # Jordan, who asked for the grant, hears about it in his own chat.
        told = [texts(card_of(a)) for a in teams.sent_to("jordan")]
        assert any("Riley Chen" in t and extension.id in t and grant.id in t for t in told), told


async def sam_active(teams: Teams, minutes: int = 20) -> Any:
    product = teams.product
    card = await intake(teams, "sam", SAM_TEXT.replace("30 minutes", f"{minutes} minutes"))
    await submit(teams, "sam", card)
    product.run_jobs()
    record = only_request(product, "sam")
    assert record.state is State.ACTIVE
    return record


async def test_an_extension_in_the_last_seconds_is_refused_with_a_clear_answer(product):
    async with playing(product) as teams:
        record = await sam_active(teams)
        product.advance((record.grant.ends_at - product.clock.now()).total_seconds() - 1)  # the end second
        answer = await say(teams, "sam", f"extend {record.id} 15")
        assert "Extending" not in answer and "too close to its end" in answer, answer
        assert [r for r in product.store.by_requester(person("sam").object_id) if r.request.extends] == []
        refused = [e for e in product.audit.for_request(record.id) if e.event == "grant.extension_refused"]
        assert refused and refused[0].data["code"] == "too_late"
        # And once a revoke is under way, the answer says so.
        await say(teams, "sam", f"deactivate {record.id}")
        answer = await say(teams, "sam", f"extend {record.id} 15")
        assert "Extending" not in answer and "is ending" in answer, answer


async def test_an_extension_that_loses_the_race_with_deactivate_fails_loudly(product):
    async with playing(product) as teams:
        record = await sam_active(teams)
        answer = await say(teams, "sam", f"extend {record.id} 15")
        assert "Extending by 15 minutes" in answer  # accepted: the grant was active
        extension = next(r for r in product.store.by_requester(person("sam").object_id) if r.request.extends)
        # Deactivate wins the race: its revoke runs before the extension's job.
        product.services.access.deactivate(record.id, Who(person("sam").object_id, "Sam Okafor"))
        product.services.grants.revoke(record.id, record.grant.generation, "deactivated")
        product.run_jobs()
        failed = product.store.get(extension.id)
        assert failed.state is State.FAILED
        audited = [e for e in product.audit.for_request(extension.id) if e.event == "grant.extension_failed"]
        assert audited and "ended" in audited[0].data["reason"]
        told = [a.get("summary") or "" for a in teams.sent_to("sam")]
        assert any(extension.id in t and "could not be" in t for t in told), told
        assert product.graph.instances() == []
        assert product.store.get(record.id).grant.ends_at == record.grant.ends_at
