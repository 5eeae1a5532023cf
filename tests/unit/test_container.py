"""The Dockerfile and compose.yaml, checked without a container runtime (none runs on the build machines): the
image installs the wheel as CI does, runs as a non-root user with `breakglass` as its entrypoint and a health check
on /healthz, and every command compose names is a real `breakglass` subcommand."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from services.ops.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def subcommands() -> set[str]:
    parser = build_parser()
    return set(next(a for a in parser._actions if a.dest == "command").choices)


def final_stage() -> str:
    return DOCKERFILE.split("\nFROM ")[-1]


def test_the_image_installs_the_wheel_as_ci_does():
    wheel_test = (ROOT / "tests" / "e2e" / "test_wheel.py").read_text()
    # CI installs the bare wheel (no extras) into a fresh venv; the image does the same.
    assert re.search(r'"install".*str\(wheels\[0\]\)\]', wheel_test)
    installs = re.findall(r"pip install [^\n&]*\.whl[^\n&]*", final_stage())
    assert installs and all("[" not in line for line in installs), installs
    assert "pip wheel" in DOCKERFILE and "--no-deps" in DOCKERFILE
    assert final_stage().startswith("python:3.11-slim")


def test_the_image_runs_breakglass_as_a_non_root_user_with_a_health_check():
    stage = final_stage()
    users = re.findall(r"^USER (\S+)", stage, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert 'ENTRYPOINT ["breakglass"]' in stage
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", stage, re.M)
    cmd = re.search(r'^CMD \["(\w+)"', stage, re.M)
    assert cmd and cmd.group(1) in subcommands()


def test_every_compose_command_is_a_breakglass_subcommand():
    known = subcommands()
    services = COMPOSE["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "breakglass" or s.get("build")}
    assert {"bot", "worker1", "worker2", "scheduler"} <= set(ours)
    for name, service in ours.items():
        assert service["command"][0] in known, (name, service["command"])
    assert [s["command"][0] for s in ours.values()].count("worker") == 2


def test_compose_redis_keeps_its_data_and_never_evicts():
    redis = COMPOSE["services"]["redis"]["command"]
    assert "--appendonly" in redis and redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--requirepass" in redis
