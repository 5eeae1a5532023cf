"""HttpClient reads proxies and the CA bundle from the environment once per session (requests would re-read them on
every call); a deployment behind a proxy must still go through it, and NO_PROXY must still be honoured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services.clients.http import HttpClient, UpstreamError
from services.emulators.base import RunningEmulator
from services.emulators.graph import GraphEmulator

from .conftest import FAST

ELSEWHERE = "http://graph.proxied.invalid/v1.0"  # resolvable only through the proxy


def test_requests_go_through_the_environment_proxy(start: Callable[[Any], RunningEmulator],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = start(GraphEmulator(signing_secret="s" * 32))  # answers absolute-form requests, as a proxy would
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpClient("graph", base_url=ELSEWHERE, retry=FAST)
    for _ in range(2):  # the second call uses the proxy read for this origin the first time
        response = client.get("/users", allow=[401])
        assert response.status_code == 401 and response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_no_proxy_is_honoured(start: Callable[[Any], RunningEmulator], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = start(GraphEmulator(signing_secret="s" * 32))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "graph.proxied.invalid")
    client = HttpClient("graph", base_url=ELSEWHERE, retry=FAST)
    with pytest.raises(UpstreamError) as raised:
        client.get("/users", allow=[401])
    assert raised.value.kind == "connection"
