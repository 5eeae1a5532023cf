"""Fixtures for the emulator tests: each emulator runs for real on loopback in its own thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from services.emulators import (
    Emulator,
    EntraEmulator,
    GraphEmulator,
    LocalCA,
    RunningEmulator,
    demo_seed,
)


@dataclass
class Served:
    """A started emulator, its base URL and an HTTP session preconfigured for it."""

    emulator: Any
    url: str
    http: requests.Session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=5, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + path, timeout=5, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.patch(self.url + path, timeout=5, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.put(self.url + path, timeout=5, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.delete(self.url + path, timeout=5, **kwargs)


@pytest.fixture(scope="session")
def local_ca() -> LocalCA:
    return LocalCA()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(emulator, **session_settings)`` starts it and stops it when the test ends."""
    running: list[RunningEmulator] = []
    sessions: list[requests.Session] = []

    def _serve(emulator: Emulator, *, headers: dict[str, str] | None = None, auth: Any = None,
               verify: Any = True) -> Served:
        started = emulator.start()
        running.append(started)
        session = requests.Session()
        session.trust_env = False  # never route loopback through a proxy from the environment
        session.headers.update(headers or {})
        session.auth = auth
        session.verify = verify
        sessions.append(session)
        return Served(emulator, started.url, session)

    yield _serve
    for session in sessions:
        session.close()
    for started in reversed(running):
        started.stop()


@pytest.fixture
def graph(serve: Callable[..., Served]) -> Served:
    emulator = GraphEmulator(min_active_seconds=0)
    emulator.seed(demo_seed()["graph"])
    return serve(emulator, headers={"Authorization": f"Bearer {emulator.mint_token()}"})


@pytest.fixture
def entra(serve: Callable[..., Served], local_ca: LocalCA, tmp_path: Any) -> Served:
    emulator = EntraEmulator(ca=local_ca)
    return serve(emulator, verify=local_ca.write_ca_pem(tmp_path / "entra-ca.pem"))


def same_keys(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """The emulator's object has exactly the fixture's field set (order-insensitive)."""
    assert sorted(actual) == sorted(expected), (
        f"missing: {sorted(set(expected) - set(actual))}, extra: {sorted(set(actual) - set(expected))}"
    )
