"""``python -m tests.emulators`` as a real subprocess: READY line, working emulators, clean SIGTERM."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[3]
READY = "EMULATORS READY "


def _read_ready_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            return process.stdout.readline()
    raise TimeoutError("no READY line")


def test_cli_starts_seeded_emulators_prints_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    ca_path = tmp_path / "entra-ca.pem"
    config = tmp_path / "emulators.json"
    config.write_text(json.dumps({"emulators": {"graph": {}, "entra": {}, "servicenow": {}, "botconnector": {}},
                                  "secrets": {"servicenow_password": "from-config"}}))
    process = subprocess.Popen(
        [sys.executable, "-m", "services.emulators", "--config", str(config), "--seed", "demo",
         "--entra-ca-out", str(ca_path), "--pim-min-active-seconds", "0", "--clock-offset", "0"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        line = _read_ready_line(process)
        assert line.startswith(READY) and line.endswith("\n")
        urls = json.loads(line[len(READY):])
        assert set(urls) == {"graph", "entra", "servicenow", "botconnector"}
        assert all(u.startswith("http://127.0.0.1:") for n, u in urls.items() if n != "entra")
        assert urls["entra"].startswith("https://127.0.0.1:")
        assert b"BEGIN CERTIFICATE" in ca_path.read_bytes()

        incident = requests.get(urls["servicenow"] + "/api/now/table/incident",
                                params={"sysparm_query": "number=INC0012345"},
                                auth=("svc_breakglass", "from-config"), timeout=5)
        assert incident.json()["result"][0]["number"] == "INC0012345"
        openid = requests.get(urls["entra"] + "/aaaaaaaa-0000-0000-0000-000000000001/v2.0/.well-known/"
                              "openid-configuration", verify=str(ca_path), timeout=5)
        assert openid.json()["token_endpoint"].startswith(urls["entra"])
        health = requests.get(urls["graph"] + "/_emulator/health", timeout=5).json()
        assert health == {"name": "graph", "ok": True}

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None and process.stdout.read() == ""  # exactly one stdout line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_reports_configuration_errors_with_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.emulators", "--emulators", "graph,nonexistent"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert "nonexistent" in result.stderr
    assert result.stdout == ""
