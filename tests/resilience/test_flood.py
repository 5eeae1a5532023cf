"""One chatty user cannot fill Redis (issue 16, item 7), through the real aiohttp app and botbuilder, real Redis and
the emulators: a per-user token bucket on messages, intake submits and card clicks; an over-limit sender gets one
polite reply per minute and costs no Redis growth; drafts are bounded per user and short-lived."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.harness import Product, person, start_product
from tests.integration.bot.conftest import texts
from tests.integration.bot.test_flows import RILEY_TEXT, intake, submit
from tests.resilience.test_approval_integrity import playing
from tests.teams_activities import invoke, message

# 4 KB of hostile text: control bytes, bidi overrides, zero-width characters, markup, a little of everything.
HOSTILE = ("Need Global Admin \x1b[31m\x07\x08\r for INC0012345 \u202e\u200b<script>x</script> [a](https://e.x) "
           * 60)[:4000]
POLITE = "faster than breakglass accepts"


def redis_bytes(client: redis.Redis) -> int:
    """Memory of every key in this test's database (other databases on the server are other people's)."""
    return sum(int(client.memory_usage(key) or 0) for key in client.scan_iter(count=1000))


@pytest.fixture()
def product(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_product(tmp_path, redis_client, redis_url)
    yield p
    p.stop()


async def test_a_flood_from_one_user_costs_little_redis_and_others_get_through(product):
    client = product.runtime.redis
    async with playing(product) as teams:
        url = product.service_url
        await teams.post(message("sam", "help", url))  # Sam's sighting and chat exist before the measurement
        await teams.post(message("riley", "help", url))
        before = redis_bytes(client)
        began = time.monotonic()
        statuses = []
        for n in range(300):
            status, _ = await teams.post(message("sam", f"{n} {HOSTILE}", url))
            statuses.append(status)
            if n == 150:  # meanwhile, Riley asks for access and submits
                card = await intake(teams, "riley", RILEY_TEXT)
                result = await submit(teams, "riley", card)
                assert "Waiting for approval" in texts(result), texts(result)
        elapsed = time.monotonic() - began
        assert set(statuses) == {201}
        grown = redis_bytes(client) - before
        assert product.store.by_requester(person("riley").object_id), "Riley's request did not go through"
        assert grown < 100 * 1024, f"Redis grew by {grown} bytes"
        replies = [texts(c) for c in teams.cards_to("sam")]
        polite = [r for r in replies if POLITE in r]
        assert 1 <= len(polite) <= 1 + int(elapsed // 60), (len(polite), elapsed)
        assert len(replies) < 120, len(replies)  # most of the flood got no answer at all
        drafts = [k for k in client.scan_iter(match="*draft-meta*", count=1000)]
        assert len(drafts) <= 5 + 1, len(drafts)  # Sam's newest five, and Riley's
        assert all(0 < client.ttl(k) <= 2 * 3600 for k in drafts)


async def test_card_clicks_are_limited_too_and_the_answer_says_so(product):
    async with playing(product) as teams:
        url = product.service_url
        answers = []
        for n in range(60):
            activity = invoke("jordan", "request.cancel", {"requestId": f"BG-{n:06d}"}, url)
            answers.append(texts(await teams.invoke_card(activity)))
        assert any(POLITE in a for a in answers), answers[-3:]
        # Refreshes are Teams' own (every card view): never counted, so an approver's cards keep rendering.
        status, body = await teams.post(invoke("jordan", "request.refresh", {"requestId": "BG-AAAAAA"}, url))
        assert status == 200 and POLITE not in str(body)
