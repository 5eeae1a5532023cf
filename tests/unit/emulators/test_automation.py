"""The runbook webhook receiver (Azure Automation / Logic Apps style): records each delivery with its headers and
JSON body, answers 202 with the job it started, checks the HMAC signature when given the secret, and can be made
to time out or fail."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest
import requests

from services.emulators import AutomationEmulator

from .conftest import Served

SECRET = "runbook-secret-0123456789abcdef0123456789"


def signed(body: bytes, timestamp: str = "1700000000", secret: str = SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Breakglass-Timestamp": timestamp,
            "X-Breakglass-Signature": f"sha256={mac}", "X-Breakglass-Delivery": "BG-AAAAAA:rb-x"}


@pytest.fixture
def automation(serve: Callable[..., Served]) -> Served:
    return serve(AutomationEmulator(secret=SECRET))


def test_a_delivery_is_recorded_and_starts_a_job(automation: Served) -> None:
    body = json.dumps({"request_id": "BG-AAAAAA", "role": "User Administrator"}).encode()
    response = automation.post("/webhooks/soar?token=abc", data=body, headers=signed(body))
    assert response.status_code == 202
    assert len(response.json()["JobIds"]) == 1
    [delivery] = automation.emulator.deliveries()
    assert delivery["hook"] == "soar" and delivery["body"]["request_id"] == "BG-AAAAAA"
    assert delivery["signature_valid"] is True and delivery["headers"]["X-Breakglass-Delivery"] == "BG-AAAAAA:rb-x"
    assert "token" not in json.dumps(automation.emulator.state())  # the URL's token is a secret: never kept


def test_a_bad_signature_is_refused_and_still_recorded(automation: Served) -> None:
    body = b'{"request_id": "BG-AAAAAA"}'
    response = automation.post("/webhooks/soar", data=body, headers=signed(body, secret="wrong" * 8))
    assert response.status_code == 401
    assert automation.emulator.deliveries()[0]["signature_valid"] is False


def test_it_can_time_out_or_fail(automation: Served) -> None:
    automation.emulator.add_fault(path="/webhooks/soar", method="POST", latency_ms=1500, times=1)
    body = b"{}"
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        automation.http.post(automation.url + "/webhooks/soar", data=body, headers=signed(body), timeout=0.3)
    assert time.monotonic() - started < 1.4
    automation.emulator.add_fault(path="/webhooks/soar", method="POST", status=500, times=1)
    assert automation.post("/webhooks/soar", data=body, headers=signed(body)).status_code == 500
    assert automation.post("/webhooks/soar", data=body, headers=signed(body)).status_code == 202
