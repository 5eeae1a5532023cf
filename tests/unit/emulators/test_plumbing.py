"""Common plumbing: call log, fault injection, state/reset, clock and the thread runner (over real HTTP)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import requests

from services.emulators import FaultRule, HaloEmulator, OpenAIEmulator, start_in_thread
from services.emulators.faults import FaultInjector, FaultRuleError

from .conftest import Served

COMPLETIONS = "/v1/chat/completions"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def openai(serve: Callable[..., Served]) -> Served:
    return serve(OpenAIEmulator(api_key="k-123456789"), headers={"Authorization": "Bearer k-123456789"})


def test_call_log_records_request_details_with_redacted_authorization(openai: Served) -> None:
    before = time.time()
    response = openai.post(COMPLETIONS + "?trace=1", json=CHAT)
    assert response.status_code == 200

    [record] = openai.emulator.calls.list()
    assert record.method == "POST"
    assert record.path == COMPLETIONS
    assert record.query == {"trace": "1"}
    assert record.headers["Authorization"] == "Bearer k-123456..."  # scheme + first 8 chars only
    assert record.body == CHAT
    assert record.status == 200
    assert before <= record.time <= time.time()
    assert record.monotonic <= time.monotonic()


def test_call_log_http_api_filters_and_clears(openai: Served) -> None:
    openai.post(COMPLETIONS, json=CHAT)
    openai.get("/v1/models")  # unknown route: still logged (404)

    assert [c["status"] for c in openai.get("/_emulator/calls").json()] == [200, 404]
    assert len(openai.get("/_emulator/calls", params={"path": "chat", "method": "POST"}).json()) == 1
    assert openai.get("/_emulator/calls", params={"method": "DELETE"}).json() == []
    assert openai.delete("/_emulator/calls").status_code == 204
    assert openai.get("/_emulator/calls").json() == []


def test_fault_429_with_fractional_retry_after_applies_times_then_stops(openai: Served) -> None:
    rule = {"path": "/chat/completions$", "method": "POST", "status": 429, "headers": {"Retry-After": "2.5"},
            "times": 1}
    created = openai.post("/_emulator/faults", json=rule)
    assert created.status_code == 201
    assert [f["id"] for f in openai.get("/_emulator/faults").json()] == [created.json()["id"]]

    throttled = openai.post(COMPLETIONS, json=CHAT)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2.5"
    assert throttled.json()["error"]["code"] == "rate_limit_exceeded"  # the emulator's own 429 envelope
    assert openai.post(COMPLETIONS, json=CHAT).status_code == 200
    assert openai.get("/_emulator/faults").json() == []
    assert openai.emulator.calls.list()[0].fault == created.json()["id"]


def test_fault_can_take_status_headers_and_body_from_a_fixture(serve: Callable[..., Served]) -> None:
    halo = serve(HaloEmulator())
    halo.emulator.add_fault(path="^/api/authinfo$", fixture="graph/error_429_too_many_requests_doc.http.json",
                            headers={"Retry-After": "1.5"})
    response = halo.get("/api/authinfo")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1.5"
    assert response.json()["error"]["code"] == "TooManyRequests"


def test_fault_header_set_to_none_removes_a_default_header(openai: Served) -> None:
    openai.post("/_emulator/faults", json={"path": ".", "status": 429, "headers": {"Retry-After": None}})
    response = openai.post(COMPLETIONS, json=CHAT)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_fault_drop_resets_the_connection_without_a_response(openai: Served) -> None:
    openai.emulator.add_fault(path="chat", drop=True, times=1)
    with pytest.raises(requests.ConnectionError):
        openai.post(COMPLETIONS, json=CHAT)
    record = openai.emulator.calls.list()[0]
    assert record.status is None
    assert record.fault is not None
    assert openai.post(COMPLETIONS, json=CHAT).status_code == 200  # the emulator survives


def test_fault_latency_delays_the_real_response(openai: Served) -> None:
    openai.emulator.add_fault(path="chat", latency_ms=120, times=1)
    started = time.monotonic()
    assert openai.post(COMPLETIONS, json=CHAT).status_code == 200
    assert time.monotonic() - started >= 0.12
    assert openai.emulator.calls.list()[0].duration_ms >= 120


def test_fault_after_the_handler_does_the_work_then_loses_or_delays_the_response(openai: Served) -> None:
    openai.emulator.add_fault(path="chat", after=True, drop=True, times=1)
    with pytest.raises(requests.ConnectionError):
        openai.post(COMPLETIONS, json=CHAT)
    assert openai.emulator.calls.list()[0].status is None
    assert openai.emulator.served_count == 1  # handled before the connection was reset
    openai.emulator.add_fault(path="chat", after=True, latency_ms=120, times=1)
    started = time.monotonic()
    assert openai.post(COMPLETIONS, json=CHAT).status_code == 200
    assert time.monotonic() - started >= 0.12 and openai.emulator.served_count == 2
    assert openai.post("/_emulator/faults", json={"path": "x", "after": True, "status": 500}).status_code == 400


def test_probabilistic_faults_replay_identically_for_the_same_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        injector = FaultInjector(seed=seed)
        injector.add(path=".", status=503, probability=0.5)
        return [injector.match("GET", "/x") is not None for _ in range(40)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 5 < sum(pattern(7)) < 35


def test_fault_with_duration_expires_by_itself() -> None:
    injector = FaultInjector()
    injector.add(FaultRule(path=".", status=503, duration_s=5, created_monotonic=time.monotonic() - 6))
    assert injector.match("GET", "/anything") is None
    assert injector.active() == []


def test_a_fault_can_skip_the_first_matching_requests() -> None:
    injector = FaultInjector()
    injector.add(FaultRule.from_json({"path": "/x", "method": "POST", "status": 403, "skip": 1, "times": 1}))
    assert [injector.match("POST", "/x") is not None for _ in range(3)] == [False, True, False]
    assert injector.match("GET", "/x") is None
    with pytest.raises(FaultRuleError):
        FaultRule(path=".", status=500, skip=-1)


def test_invalid_fault_definition_is_rejected(openai: Served) -> None:
    assert openai.post("/_emulator/faults", json={"path": "x"}).status_code == 400  # does nothing
    assert openai.post("/_emulator/faults", json={"path": "(", "status": 500}).status_code == 400
    assert openai.post("/_emulator/faults", json={"status": 500, "bogus": 1}).status_code == 400


def test_faults_can_be_deleted_individually_and_all_at_once(openai: Served) -> None:
    first = openai.post("/_emulator/faults", json=[{"status": 500}, {"status": 503}]).json()
    assert openai.delete(f"/_emulator/faults/{first[0]['id']}").status_code == 204
    assert len(openai.get("/_emulator/faults").json()) == 1
    assert openai.delete("/_emulator/faults").status_code == 204
    assert openai.get("/_emulator/faults").json() == []


def test_state_api_sets_reads_and_resets_to_the_seeded_baseline(openai: Served) -> None:
    openai.emulator.seed({"content": "seeded"})
    assert openai.post("/_emulator/state", json={"content": "changed", "delay_ms": 0}).status_code == 200
    assert openai.get("/_emulator/state").json()["content"] == "changed"
    openai.post(COMPLETIONS, json=CHAT)

    state = openai.post("/_emulator/reset").json()
    assert state["content"] == "seeded"
    assert openai.emulator.calls.list() == []
    assert openai.post("/_emulator/reset", json={"empty": True}).json()["content"] != "seeded"
    assert openai.post("/_emulator/state", json={"nonsense": 1}).status_code == 400


def test_clock_offset_is_settable_over_http(openai: Served) -> None:
    before = openai.emulator.clock.now()
    assert openai.post("/_emulator/clock", json={"advance_s": 3600}).json()["offset_s"] == 3600
    assert (openai.emulator.clock.now() - before).total_seconds() >= 3600
    assert openai.post("/_emulator/state", json={"clock_offset_s": 10}).json()["clock"]["offset_s"] == 10
    assert openai.post("/_emulator/clock", json={}).status_code == 400


def test_wait_for_returns_once_a_matching_call_completed(openai: Served) -> None:
    openai.post(COMPLETIONS, json=CHAT)
    assert len(openai.emulator.calls.wait_for(path="chat", method="POST", timeout=1)) == 1
    with pytest.raises(TimeoutError):
        openai.emulator.calls.wait_for(path="chat", count=2, timeout=0.05)


def test_runner_serves_on_loopback_and_stops_cleanly() -> None:
    emulator = OpenAIEmulator()
    with start_in_thread(emulator) as running:
        assert running.url == f"http://127.0.0.1:{running.port}"
        assert not running.url.endswith("/")
        assert requests.get(running.url + "/_emulator/health", timeout=5).json() == {"name": "openai", "ok": True}
        assert running.emulator is emulator
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", running.port), timeout=1):
        pass


def test_runner_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_in_thread(OpenAIEmulator(), host="0.0.0.0")
