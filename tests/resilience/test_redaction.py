"""Credentials never reach a log line or the doctor's output (issue 16, item 8): Redis URLs with a password
(`redis://`, `rediss://`), `Authorization: Basic`, `client_secret=` and `password=` in every spelling a message,
an argument, an `extra` field or an exception can carry them, through the real logging configuration and the real
`breakglass doctor` command."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from services.logs import configure_logging
from services.settings import Settings
from tests.conftest import TEST_REDIS_URL
from tests.resilience.conftest import ROOT

SECRETS = ["S3cr3t-redis-pw", "tls-Redis-pw-9", "dXNlcjpodW50ZXIy", "hunter2-client-secret", "quoted pass word",
           "pw-in-json", "urlenc-secret-7"]
HOSTILE = [
    "connecting to redis://:S3cr3t-redis-pw@cache.internal:6379/0",
    "connecting to rediss://default:tls-Redis-pw-9@cache.redis.cache.windows.net:6380/0",
    "upstream said: Authorization: Basic dXNlcjpodW50ZXIy",
    "headers {'Authorization': 'Basic dXNlcjpodW50ZXIy'}",
    "token request body grant_type=client_credentials&client_secret=hunter2-client-secret&scope=x",
    'login with password="quoted pass word" failed',
    '{"username": "svc", "password": "pw-in-json"}',
    "form client_secret%3Durlenc-secret-7%26scope",
]


def emitted(capsys: pytest.CaptureFixture[str], fmt: str) -> str:
    configure_logging(Settings(_env_file=None, log_format=fmt))  # type: ignore[call-arg]
    log = logging.getLogger("breakglass.test.redaction")
    try:
        for text in HOSTILE:
            log.warning(text)  # in the message
            log.warning("value: %s", text)  # in an argument
            log.warning("value: %s", ValueError(text))  # in an argument that is not a string
            log.warning("extra", extra={"detail": text, "nested": {"facts": [text]}})  # in extra fields
            try:
                raise RuntimeError(text)
            except RuntimeError:
                log.exception("failed")  # in a traceback
    finally:
        logging.getLogger().handlers.clear()
    return capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_credential_reaches_a_log_line(capsys, fmt):
    out = emitted(capsys, fmt)
    leaked = [s for s in SECRETS if s in out]
    assert leaked == [], out
    shown = 5 if fmt == "json" else 4  # the text format does not print extra fields
    assert out.count("[redacted]") >= len(HOSTILE) * shown, out
    if fmt == "json":
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert len(records) == len(HOSTILE) * 5  # redaction never breaks a JSON line
    assert "cache.internal:6379" in out and "scope=x" in out  # only the secret is masked, not the context


def doctor(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BREAKGLASS_ENV": "development",
            "BREAKGLASS_DATA_DIR": str(tmp_path / "state"), "ENTRA_AUTHORITY_HOST": "https://127.0.0.1:9",
            "GRAPH_BASE_URL": "https://127.0.0.1:9/v1.0", "BREAKGLASS_HTTP_MAX_ATTEMPTS": "1",
            "BREAKGLASS_GRAPH_TIMEOUT": "2", "BREAKGLASS_LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "services.ops.cli", "doctor"], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def with_password(url: str, user: str, password: str, scheme: str = "redis") -> str:
    rest = url.split("://", 1)[1]
    return f"{scheme}://{user}:{password}@{rest}"


def test_doctor_never_prints_the_redis_password(tmp_path):
    # Redis 6+ accepts any password for a `nopass` user named explicitly, so the check passes and prints its line.
    url = with_password(TEST_REDIS_URL, "default", "S3cr3t-redis-pw")
    result = doctor({"REDIS_URL": url, "ENTRA_CLIENT_SECRET": "hunter2-client-secret"}, tmp_path)
    out = result.stdout + result.stderr
    redis_line = next(line for line in result.stdout.splitlines() if line.startswith("Redis"))
    assert "S3cr3t-redis-pw" not in out, out
    assert "hunter2-client-secret" not in out, out
    assert "[redacted]" in redis_line and "127.0.0.1:6379" in redis_line, redis_line


def test_doctor_masks_a_rediss_password_in_a_failure_too(tmp_path):
    result = doctor({"REDIS_URL": "rediss://default:tls-Redis-pw-9@127.0.0.1:1/0"}, tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "tls-Redis-pw-9" not in out, out
    assert "Traceback" not in out
    # The failing check still says which Redis it tried, with the password masked.
    redis_line = next(line for line in result.stdout.splitlines() if line.startswith("Redis"))
    assert "FAIL" in redis_line and "rediss://default:[redacted]@127.0.0.1:1/0" in redis_line, redis_line
