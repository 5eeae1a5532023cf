"""The bot endpoint's front door, against a real `breakglass serve` process (production settings) whose tokens are
signed by a local OpenID metadata/JWKS endpoint: fail closed without credentials, 401 for every bad token (never
500), a signing-key rollover picked up without a restart, bounded bodies with bounded memory, other tenants and
channels refused and audited before any state lookup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from services.emulators.botauth import METADATA_PATH, BotAuthEmulator, TokenVariant
from tests.harness import TENANT, Product, settings_env, start_product
from tests.integration.jobs.conftest import wait_for
from tests.resilience.conftest import ROOT, free_port
from tests.teams_activities import invoke, message

APP_ID = "bbbbbbbb-0000-0000-0000-000000000001"


@dataclass
class Served:
    url: str
    product: Product
    auth: BotAuthEmulator
    proc: subprocess.Popen[bytes]
    metrics_url: str = ""

    def post(self, body: bytes | str | Any, *, token: str | None = None, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> requests.Response:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        sent = {"Content-Type": content_type, **(headers or {})}
        if token is not None:
            sent["Authorization"] = token
        return requests.post(self.url + "/api/messages", data=data, headers=sent, timeout=30)

    def bearer(self, variant: TokenVariant = TokenVariant.VALID) -> str:
        return self.auth.minter().authorization(self.product.service_url, variant)

    def refresh(self, alias: str = "sam", **options: Any) -> dict[str, Any]:
        return invoke(alias, "request.refresh", {"requestId": "BG-AAAAAA"}, self.product.service_url, **options)


def serve_env(settings: Any) -> dict[str, str]:
    return {**os.environ, **settings_env(settings)}


@pytest.fixture()
def serve(tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Callable[[], Served]]:
    """`breakglass serve` in production mode with authentication on, against the emulators."""
    product = start_product(tmp_path, redis_client, redis_url)
    emulator = BotAuthEmulator(app_id=APP_ID)
    running = emulator.start()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> Served:
        port, metrics_port = free_port(), free_port()
        settings = product.settings.model_copy(update={
            "env": "production", "clock_offset_s": 0.0, "app_id": APP_ID, "app_password": SecretStr("secret"),
            "app_tenant_id": TENANT, "bot_openid_metadata_url": running.url + METADATA_PATH, "port": port,
            "metrics_port": metrics_port})
        log = (tmp_path / f"serve-{port}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", "serve"], env=serve_env(settings),
                                stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is not None or healthy(url), 30, "serve to listen")
        assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
        return Served(url, product, emulator, proc, f"http://127.0.0.1:{metrics_port}")

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        running.stop()
        product.stop()


def healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def no_trace(response: requests.Response) -> None:
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_serve_without_credentials_exits_non_zero_says_why_and_never_listens(tmp_path):
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BREAKGLASS_ENV": "production",
           "BREAKGLASS_PORT": str(port), "BREAKGLASS_DATA_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", "serve"], env=env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_listening = False
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        seen_listening = seen_listening or listening(port)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode not in (0, None)
    assert not seen_listening and not listening(port)
    assert "refusing to start" in err
    for name in ("MicrosoftAppId", "MicrosoftAppPassword", "MicrosoftAppTenantId", "ENTRA_CLIENT_ID",
                 "BREAKGLASS_AUDIT_HMAC_KEY"):
        assert name in err, name
    assert "Traceback" not in err + out


BAD_TOKENS: list[tuple[str, Callable[[Served], str | None]]] = [
    ("missing header", lambda s: None),
    ("Bearer abc", lambda s: "Bearer abc"),
    ("1 MB token", lambda s: "Bearer " + "a" * (1024 * 1024)),
    *((variant.value, lambda s, v=variant: s.bearer(v)) for variant in TokenVariant
      if variant is not TokenVariant.VALID),
]


def test_every_bad_token_gets_401_and_a_valid_one_is_accepted(serve):
    served = serve()
    accepted = served.post(served.refresh(), token=served.bearer())
    assert accepted.status_code == 200 and accepted.json()["statusCode"] == 200, accepted.text
    for name, token in BAD_TOKENS:
        response = served.post(served.refresh(), token=token(served))
        assert response.status_code == 401, (name, response.status_code, response.text[:200])
        no_trace(response)
    assert served.proc.poll() is None
    assert served.post(served.refresh(), token=served.bearer()).status_code == 200  # still serving


def test_a_signing_key_rollover_is_picked_up_without_a_restart(serve):
    served = serve()
    auth = served.auth
    assert served.post(served.refresh(), token=served.bearer()).status_code == 200  # the keys are now cached
    new_kid = auth.add_key(("msteams",), activate=True)  # Microsoft rolls the signing key
    rolled = served.post(served.refresh(), token=served.bearer())
    assert rolled.status_code == 200, rolled.text
    assert auth.active_kid == new_kid
    # Made-up key ids cannot make the bot hammer the metadata endpoint: at most one refresh a minute.
    fetched = auth.jwks_request_count
    for _ in range(20):
        assert served.post(served.refresh(), token=served.bearer(TokenVariant.UNKNOWN_KID)).status_code == 401
    assert auth.jwks_request_count <= fetched + 1
    assert served.post(served.refresh(), token=served.bearer()).status_code == 200


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def chunked(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(chunk, total - sent)
        sent += chunk


def post_or_reset(served: Served, data: Any, **headers: str) -> int | None:
    """The status, or None when the server closed the connection mid-upload (after refusing the body)."""
    try:
        response = requests.post(served.url + "/api/messages", data=data,
                                 headers={"Content-Type": "application/json", **headers}, timeout=30)
    except requests.ConnectionError:
        return None
    no_trace(response)
    return response.status_code


def test_bad_bodies_get_400_413_415_with_bounded_memory(serve):
    served = serve()
    token = served.bearer()
    cases = [
        (b"not json at all", "application/json", 400),
        (b'{"type": "message"', "application/json", 400),
        (json.dumps(served.refresh()).encode(), "text/plain", 415),
        (json.dumps(served.refresh()).encode(), "application/x-www-form-urlencoded", 415),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # 200 KB of nesting, under the size limit
        (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "application/json", 400),
    ]
    for body, content_type, status in cases:
        response = served.post(body, token=token, content_type=content_type)
        assert response.status_code == status, (body[:30], response.status_code, response.text[:200])
        no_trace(response)
    before = peak_rss(served.proc.pid)
    ten_mb = 10 * 1024 * 1024
    for _ in range(3):
        assert post_or_reset(served, b"{" + b" " * ten_mb + b"}", Authorization=token) in {413, None}
        assert post_or_reset(served, chunked(ten_mb), Authorization=token) in {413, None}
    assert peak_rss(served.proc.pid) - before < 8 * 1024 * 1024  # a 10 MB body is never held in memory
    assert served.post(served.refresh(), token=token).status_code == 200  # and the bot is still fine


def test_other_tenant_and_other_channel_are_refused_and_audited_before_any_state_lookup(serve):
    served = serve()
    product = served.product
    sam = "cccccccc-0000-0000-0000-000000000003"
    for activity, why in [
        (message("sam", "help", product.service_url, tenant="99999999-0000-0000-0000-000000000000"), "tenant"),
        (served.refresh(tenant="99999999-0000-0000-0000-000000000000"), "tenant"),
        # A channel the signing key is endorsed for, but not the one breakglass serves.
        (message("sam", "help", product.service_url, channel="webchat"), "channel"),
    ]:
        response = served.post(activity, token=served.bearer())
        assert response.status_code == 403 and why in response.json()["error"], response.text
    rejected = [e for e in product.audit.events() if e.event == "activity.rejected"]
    assert [e.actor for e in rejected] == [sam] * 3
    # Refused before any state lookup: nothing learned about the sender, nothing sent, no request touched.
    assert product.store.get_doc("teams-user", sam) is None
    assert product.connector.all_activities() == []
    assert [e.event for e in product.audit.events()] == ["activity.rejected"] * 3


def test_metrics_and_readiness_are_served_on_the_loopback_port_only(serve):
    """How many people hold elevated roles now is nobody's business on the public listener: /metrics and /readyz
    answer only on BREAKGLASS_METRICS_PORT (loopback by default); /healthz stays public for load balancers."""
    import psutil

    served = serve()
    for path in ("/metrics", "/readyz"):
        public = requests.get(served.url + path, timeout=10)
        assert public.status_code == 404, (path, public.status_code, public.text[:200])
        assert "breakglass_grants_active" not in public.text
    assert requests.get(served.url + "/healthz", timeout=10).status_code == 200
    metrics = requests.get(served.metrics_url + "/metrics", timeout=10)
    assert metrics.status_code == 200 and "breakglass_grants_active" in metrics.text
    ready = requests.get(served.metrics_url + "/readyz", timeout=10)
    # Serving, and "degraded" only because this test runs no worker (/readyz says so).
    assert ready.status_code == 200 and ready.json()["status"] in {"ready", "degraded"}, ready.text
    assert requests.post(served.metrics_url + "/api/messages", json={}, timeout=10).status_code in {404, 405}
    port = int(served.metrics_url.rsplit(":", 1)[1])
    bound = {c.laddr.ip for c in psutil.Process(served.proc.pid).net_connections(kind="tcp")
             if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert bound == {"127.0.0.1"}, bound
