"""Several hosts on one Redis across a network, on one machine: Linux network namespaces (bench/netns.py).

- `<tag>-redis` runs `redis-server` with AOF, `noeviction` and `requirepass`, behind a 1 ms round trip: netem on
  its link where the kernel has netem, else the delaying TCP proxy (bench/tcpproxy.py) in front of it.
- `<tag>-app1`, `<tag>-app2` each run `breakglass serve`, `worker` and `scheduler`, pointed at it by `REDIS_URL`.
  The bots listen on their namespace address with real Bot Framework JWT authentication.
- The emulators run in the root namespace on loopback (they never bind anything else); a forwarder carries their
  ports to the switch address and, in each app namespace, back to 127.0.0.1, so the product sees the same URLs (and
  TLS names) as on one host.

Used by the slow test (tests/resilience/test_multihost.py) and by `python -m bench --multihost`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import redis

from bench.env import (
    MONDAY_10_BERLIN,
    PYTHON,
    ROOT,
    Child,
    Emulators,
    Product,
    ProductConfig,
    redis_server_binary,
    wait_until,
)
from bench.netns import Topology

REDIS_PORT = 6379
PROXY_PORT = 6380
BOT_PORT = 3978
METRICS_PORT = 9464


class Forwarder:
    """A bench.tcpproxy process inside a namespace."""

    def __init__(self, topology: Topology, host: str, maps: list[str], delay_ms: float, workdir: Path, name: str):
        self.stats = workdir / f"{name}.stats.json"
        argv = [PYTHON, "-m", "bench.tcpproxy", "--delay-ms", str(delay_ms), "--stats", str(self.stats)]
        for spec in maps:
            argv += ["--map", spec]
        log: IO[bytes] = (workdir / f"{name}.log").open("ab")
        self.proc = subprocess.Popen(topology.argv(host, argv), stdout=subprocess.PIPE, stderr=log, cwd=str(ROOT))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PROXY READY"):
            raise RuntimeError(f"forwarder {name} did not start; see {workdir / (name + '.log')}")

    def counters(self) -> dict[str, dict[str, dict[str, int]]]:
        """{listen address: {client address: {connections, round_trips}}}"""
        before = self.stats.stat().st_mtime_ns if self.stats.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: self.stats.exists() and self.stats.stat().st_mtime_ns != before, 5, "proxy stats",
                   interval=0.01)
        return dict(json.loads(self.stats.read_text()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class NetRedis:
    """redis-server inside the redis namespace: AOF, noeviction, a password, reachable only across the switch."""

    def __init__(self, topology: Topology, workdir: Path):
        self.topology = topology
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: Forwarder | None = None
        self.address = (topology.addresses["redis"], PROXY_PORT)

    def start(self, delay_ms: float, netem: bool) -> NetRedis:
        binds = ["127.0.0.1"] + ([self.topology.addresses["redis"]] if netem else [])
        argv = [redis_server_binary(), "--port", str(REDIS_PORT), "--bind", " ".join(binds), "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy",
                "noeviction", "--requirepass", self.password, "--daemonize", "no", "--logfile",
                str(self.dir / "log")]
        self.proc = subprocess.Popen(self.topology.argv("redis", argv), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if netem:
            self.address = (self.topology.addresses["redis"], REDIS_PORT)
        else:
            # The proxy carries every client's traffic and counts round trips per client address.
            self.proxy = Forwarder(self.topology, "redis",
                                   [f"{self.topology.addresses['redis']}:{PROXY_PORT}=127.0.0.1:{REDIS_PORT}"],
                                   delay_ms, self.dir.parent, "redis-proxy")
        client = self.client()
        wait_until(lambda: self._ping(client), 15, "redis-server in its namespace")
        return self

    @property
    def url(self) -> str:
        host, port = self.address
        return f"redis://:{self.password}@{host}:{port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=120, **kwargs)

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def stop(self) -> None:
        if self.proxy:
            self.proxy.stop()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class HostProduct(Product):
    """The product's three processes inside one app namespace."""

    def __init__(self, workdir: Path, redis_url: str, emulators: Emulators, offset_s: float, topology: Topology,
                 host: str, audit_key: str, extra_env: dict[str, str]):
        super().__init__(workdir, redis_url, emulators, offset_s)
        self.topology = topology
        self.host = host
        self.audit_key = audit_key  # every host signs the same chain
        self.bot_port = BOT_PORT
        self.extra_env = extra_env

    @property
    def address(self) -> str:
        return self.topology.addresses[self.host]

    @property
    def bot_url(self) -> str:
        return f"http://{self.address}:{self.bot_port}"

    def base_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = super().base_env({**self.extra_env, **(extra or {})})
        env.update({"BREAKGLASS_HOST": self.address, "BREAKGLASS_PORT": str(self.bot_port),
                    # /readyz and /metrics on the namespace address, so the harness (another host) can read them.
                    "BREAKGLASS_METRICS_HOST": self.address, "BREAKGLASS_METRICS_PORT": str(METRICS_PORT)})
        return env

    def start(self, config: ProductConfig) -> None:
        self._generation += 1
        self.env = self.base_env(config.env)
        if config.bot:
            self._spawn("bot", ["serve"])
        for i in range(config.workers):
            self._spawn(f"worker{i + 1}", ["worker", "--name", f"mh-{self.host}-w{i + 1}-{os.getpid()}"])
        if config.scheduler:
            self._spawn("scheduler", ["scheduler"])

    def _spawn(self, name: str, args: list[str]) -> None:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        argv = self.topology.argv(self.host, [PYTHON, "-m", "services.ops.cli", *args])
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.workdir))
        self.children[name] = Child(name, proc, log_path)

    def bot_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.bot_url + "/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self, name: str) -> None:
        """SIGKILL, like a lost host: no shutdown code runs."""
        child = self.children.pop(name, None)
        if child is not None and child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(timeout=10)

    def alive(self) -> list[str]:
        return [name for name, child in self.children.items() if child.proc.poll() is None]


@dataclass
class MultiHost:
    """Redis, emulators and two app hosts, each in its own namespace; `start()`, use, `stop()`."""

    seed: dict[str, Any]
    hosts: tuple[str, ...] = ("app1", "app2")
    rtt_ms: float = 1.0
    product_env: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="breakglass-multihost-")))
    keep: bool = False
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.topology = Topology(hosts=("redis", *self.hosts))
        self.offset_s = float(round((MONDAY_10_BERLIN - datetime.now(UTC)).total_seconds()))
        self.redis: NetRedis | None = None
        self.emulators = Emulators(self.workdir, self.offset_s, self.seed)
        self.forwarders: list[Forwarder] = []
        self.products: dict[str, HostProduct] = {}
        self.delay = "none"
        self.audit_key = secrets.token_hex(32)

    def start(self, config: ProductConfig | None = None) -> MultiHost:
        try:
            self._start(config or ProductConfig(workers=1))
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, config: ProductConfig) -> None:
        self.topology.create()
        netem = self.topology.add_delay("redis", self.rtt_ms / 2)
        self.delay = f"netem {self.rtt_ms:g} ms round trip" if netem else \
            f"delaying TCP proxy, {self.rtt_ms / 2:g} ms each way (no netem in this kernel)"
        self.log(f"  namespaces {', '.join(self.topology.created)} on {self.topology.subnet}.0/24; Redis delay: "
                 f"{self.delay}")
        self.redis = NetRedis(self.topology, self.workdir).start(self.rtt_ms / 2, netem)
        self.emulators.start()
        ports = sorted({urlsplit(url).port for url in self.emulators.urls.values() if urlsplit(url).port})
        root = self.topology.addresses["root"]
        self.forwarders.append(Forwarder(self.topology, "root", [f"{root}:{p}=127.0.0.1:{p}" for p in ports], 0,
                                         self.workdir, "fwd-root"))
        for host in self.hosts:
            self.forwarders.append(Forwarder(self.topology, host, [f"127.0.0.1:{p}={root}:{p}" for p in ports], 0,
                                             self.workdir, f"fwd-{host}"))
        for host in self.hosts:
            directory = self.workdir / host
            directory.mkdir(exist_ok=True)
            self.products[host] = HostProduct(directory, self.redis.url, self.emulators, self.offset_s, self.topology,
                                              host, self.audit_key, self.product_env)
        for product in self.products.values():
            product.start(config)
        self.wait_ready(config)

    def wait_ready(self, config: ProductConfig, timeout: float = 120) -> None:
        assert self.redis is not None
        client = self.redis.client()

        def ready() -> bool:
            for product in self.products.values():
                for child in product.children.values():
                    if child.proc.poll() is not None:
                        tail = child.log_path.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"{product.host}/{child.name} exited with {child.proc.returncode}:\n{tail}")
                if config.bot and not product.bot_ready():
                    return False
            workers = [m for m in client.smembers("rq:workers") if b"mh-" in m]
            return len(workers) >= config.workers * len(self.products)

        wait_until(ready, timeout, "every host's processes", interval=0.2)

    def product(self, host: str) -> HostProduct:
        return self.products[host]

    def client(self) -> redis.Redis:
        assert self.redis is not None
        return self.redis.client()

    def redis_round_trips(self) -> dict[str, int]:
        """Round trips to Redis so far, by client address (proxy mode only; empty under netem)."""
        if self.redis is None or self.redis.proxy is None:
            return {}
        counters = self.redis.proxy.counters()
        total: Counter[str] = Counter()
        for peers in counters.values():
            for peer, values in peers.items():
                total[peer] += values["round_trips"]
        return dict(total)

    def host_of(self, address: str) -> str:
        return next((h for h, a in self.topology.addresses.items() if a == address), address)

    def stop(self) -> None:
        for product in self.products.values():
            product.stop()
        for forwarder in self.forwarders:
            forwarder.stop()
        self.forwarders.clear()
        self.emulators.stop()
        if self.redis is not None:
            self.redis.stop()
        self.topology.destroy()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
