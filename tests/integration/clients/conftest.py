"""Fixtures for the outbound clients: the emulators run for real on loopback threads (Entra over https with a
throwaway CA that REQUESTS_CA_BUNDLE trusts), Redis is the shared db-15 test server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.clients.http import RetryPolicy
from services.emulators import EntraEmulator, GraphEmulator, LocalCA, RunningEmulator, demo_seed
from services.emulators.botauth import DEMO_BOT_APP_ID
from services.emulators.entra import DEMO_GRAPH_CLIENT_ID, DEMO_GRAPH_CLIENT_SECRET, DEMO_TENANT_ID, GRAPH_DEFAULT_SCOPE
from services.emulators.tokens import GRAPH_AUDIENCE
from services.settings import Settings

SIGNING_SECRET = "client-tests-shared-signing-secret-0123456789"
BOT_SCOPE = "https://api.botframework.com/.default"
BOT_SECRET = "breakglass-demo-bot-secret"
# Tests never sleep for back-off: only real Retry-After waits take wall time.
FAST = RetryPolicy(max_attempts=4, budget_s=10.0, backoff_base_s=0.005, backoff_max_s=0.02)
PEOPLE = {p["upn"].split("@")[0]: p for p in demo_seed()["tenant"]["people"]}
GA = "62e90394-69f5-4237-9190-012177145e10"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"


def make_settings(**values: Any) -> Settings:
    """Settings from keyword values only (no .env); development mode, the test key prefix."""
    return Settings(_env_file=None, **{"env": "development", "key_prefix": "bgt", **values})  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def local_ca() -> LocalCA:
    return LocalCA()


@pytest.fixture
def ca_bundle(local_ca: LocalCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """msal's verify= loses against REQUESTS_CA_BUNDLE (PROTOCOL_NOTES §4): trust the emulator CA through it."""
    bundle = local_ca.write_combined_bundle(tmp_path / "ca-bundle.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    return bundle


@pytest.fixture
def start() -> Iterator[Callable[[Any], RunningEmulator]]:
    """`start(emulator)` runs it on its own thread until the test ends."""
    running: list[RunningEmulator] = []

    def _start(emulator: Any) -> RunningEmulator:
        started = emulator.start()
        running.append(started)
        return started

    yield _start
    for started in reversed(running):
        started.stop()


@dataclass
class GraphStack:
    entra: EntraEmulator
    graph: GraphEmulator
    entra_url: str
    graph_url: str

    @property
    def graph_base(self) -> str:
        return self.graph_url + "/v1.0"

    def settings(self, **values: Any) -> Settings:
        return make_settings(**{
            "entra_authority_host": self.entra_url, "entra_tenant_id": DEMO_TENANT_ID,
            "entra_client_id": DEMO_GRAPH_CLIENT_ID, "entra_client_secret": DEMO_GRAPH_CLIENT_SECRET,
            "graph_base_url": self.graph_base, **values})


@pytest.fixture
def graph_stack(start: Callable[[Any], RunningEmulator], local_ca: LocalCA, ca_bundle: Path) -> GraphStack:
    entra = EntraEmulator(ca=local_ca, signing_secret=SIGNING_SECRET,
                          scopes={GRAPH_DEFAULT_SCOPE: GRAPH_AUDIENCE, BOT_SCOPE: "https://api.botframework.com"})
    entra.register_client(DEMO_BOT_APP_ID, secret=BOT_SECRET, roles=[])
    graph = GraphEmulator(signing_secret=SIGNING_SECRET, min_active_seconds=0)
    graph.seed(demo_seed()["graph"])
    return GraphStack(entra, graph, start(entra).url, start(graph).url)
