"""What an operator reads from `breakglass serve`: JSON lines with an RFC 3339 UTC `time`, one access-log line per
HTTP request (method, path, status, duration; never a body, a query string or a token), and the auth-disabled
warning once."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_logs_rfc3339_json_one_access_line_per_request_and_warns_once(tmp_path, redis_url):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BREAKGLASS_", "Microsoft", "ENTRA_", "REDIS"))}
    env.update({"BREAKGLASS_ENV": "development", "BREAKGLASS_DATA_DIR": str(tmp_path / "state"),
                "BREAKGLASS_PORT": str(port), "BREAKGLASS_LOG_FORMAT": "json", "REDIS_URL": redis_url,
                "BREAKGLASS_KEY_PREFIX": "bgt", "ENTRA_TENANT_ID": "aaaaaaaa-0000-0000-0000-000000000001"})
    proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz?probe=1", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.2)
        secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/messages?code=hunter2", data=b"not json",
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "Authorization": f"Bearer {secret}"})
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is one JSON object
    assert lines
    assert all(RFC3339_UTC.match(line["time"]) for line in lines), [line["time"] for line in lines][:5]
    warnings = [line for line in lines if "AUTHENTICATION IS DISABLED" in line["message"]]
    assert len(warnings) == 1
    access = [line for line in lines if line.get("logger") == "breakglass.access"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [("GET", "/healthz", 200),
                                                                       ("POST", "/api/messages", 400)]
    assert all(isinstance(a["duration_ms"], float) for a in access)
    assert "hunter2" not in err and secret not in err and "not json" not in err
