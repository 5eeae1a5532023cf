"""A full Redis (issue 16, item 6): under noeviction, a Redis at maxmemory answers every write with OOM. The
scheduler, the worker and the bot treat that like an outage: back off, log once, count it, alert once, and resume
by themselves. Real `breakglass worker` / `scheduler` processes, the real aiohttp app, a private redis-server
filled with `CONFIG SET maxmemory`. Time scale: see conftest (BREAKGLASS_RESILIENCE_SCALE)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bot.app import OUTAGE_KEY, create_app, create_ops_app
from policies.lifecycle import State
from tests.integration.bot.conftest import Teams, serving
from tests.integration.jobs.conftest import submit, wait_for
from tests.resilience.conftest import logs, reach, scaled, time_limit
from tests.teams_activities import message

OUTAGE_S = max(4.0, scaled(60))
REFUSED = "breakglass_redis_refused_total"


def channel_text(product) -> str:
    return "\n".join(channel_posts(product))


def channel_posts(product) -> list[str]:
    return [str(a["current"]) for a in product.connector.all_activities() if a["conversationId"].startswith("19:")]


async def metrics(ops: Any) -> str:
    response = await ops.get("/metrics")
    assert response.status == 200
    return await response.text()


@pytest.mark.slow
@time_limit(240)
async def test_a_full_redis_is_an_outage_that_every_process_comes_through(launch, own_redis):
    product, procs = launch(client=own_redis.client(), url=own_redis.url())
    procs.scheduler()
    procs.worker()
    app = create_app(product.settings, product.services)
    # /readyz and /metrics live on their own (loopback) listener, sharing the bot's outage watch.
    async with serving(app) as client, serving(create_ops_app(product.services, app[OUTAGE_KEY])) as ops:
        teams = Teams(client, product)
        # Granted before the outage, and due to end during it.
        held = submit(product, "sam", seconds=round(OUTAGE_S / 2) + 3)
        reach(product, held.id, State.ACTIVE, 30, logs(procs, "worker"))
        admin = own_redis.client()
        admin.config_set("maxmemory", "1")  # at maxmemory now: noeviction refuses every write with OOM
        full = time.monotonic()
        with pytest.raises(Exception, match="maxmemory"):
            admin.set("probe", "x")
        # The bot: a clean 503 with a short message, no stack trace; counted; /readyz says why.
        status, body = await teams.post(message("riley", "status", product.service_url))
        assert status == 503, body
        assert body == {"error": "breakglass cannot store anything right now; try again in a minute"}
        assert f'{REFUSED}{{kind="oom"}}' in await metrics(ops)
        ready = await ops.get("/readyz")
        assert ready.status == 503 and "refusing writes (oom)" in (await ready.json())["problems"][0]
        # The scheduler and the worker back off and stay up for the whole outage.
        time.sleep(max(0.0, full + OUTAGE_S - time.monotonic()))
        for name in ("scheduler", "worker"):
            assert procs.procs[name].poll() is None, f"{name} died on a full Redis ({logs(procs, name)})"
        scheduler_log = procs.log("scheduler")
        assert scheduler_log.count("Redis outage (oom)") == 1, logs(procs, "scheduler")  # logged once
        assert "Traceback" not in scheduler_log, logs(procs, "scheduler")
        assert held.id and product.store.get(held.id).state is State.ACTIVE  # its revoke is waiting for Redis
        admin.config_set("maxmemory", "0")
        back = time.monotonic()
        # Everyone resumes without a restart: the revoke that came due fires, a new request is granted.
        ended = reach(product, held.id, State.EXPIRED, 30, logs(procs, "scheduler", "worker"))
        assert ended.end_reason == "expired"
        fresh = submit(product, "riley", entitlement="user-admin", seconds=600)
        reach(product, fresh.id, State.ACTIVE, 30, logs(procs, "worker"))
        assert time.monotonic() - back <= 30
        status, _ = await teams.post(message("riley", "status", product.service_url))
        assert status == 201
        ready = await ops.get("/readyz")
        assert ready.status == 200, await ready.text()
        # Counted once writes worked again (per process), and one alert for the whole outage.
        counted = wait_for(lambda: (c := product.services.grants.metrics.counters("redis_outages")).get(
            "scheduler:oom") and c.get("bot:oom") and c, 30, "the outage to be counted")
        assert counted["scheduler:oom"] == 1.0 and counted["bot:oom"] == 1.0, counted
        assert 'breakglass_redis_outages_total{process_kind="scheduler:oom"} 1.0' in await metrics(ops)
        wait_for(lambda: "Redis refused writes" in channel_text(product), 30, "the outage alert")
        time.sleep(1.0)
        assert len([p for p in channel_posts(product) if "Redis refused writes" in p]) == 1
        for name in ("scheduler", "worker"):
            assert procs.procs[name].poll() is None
