"""Linux network namespaces as hosts on one machine, for the multi-host harness (bench/multihost.py).

    root namespace (the test, the emulators on loopback)
        └─ veth <tag>h (10.213.N.1) ──┐
                                      │ bridge br0 in namespace <tag>-sw (a switch, nothing else)
    <tag>-redis  veth (10.213.N.2) ───┤
    <tag>-app1   veth (10.213.N.11) ──┤
    <tag>-app2   veth (10.213.N.12) ──┘

Everything is created by this module and removed by `destroy()` (deleting a namespace deletes its interfaces and
their veth peers): traffic only ever crosses these veths and loopback, and nothing else on the machine is a
target. The one interface in the root namespace is the harness's own veth end, on a /24 nobody else uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

SUBNET_BASE = "10.213"


class NamespaceUnavailable(RuntimeError):
    """This machine (or user) cannot create network namespaces: the caller skips and says so."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


def unavailable_reason() -> str | None:
    """None when namespaces and veths can be made here, else why not (in words)."""
    if not shutil.which("ip"):
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_NET_ADMIN)"
    probe = f"bgprobe{os.getpid() % 100000}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        veth = _run("ip", "-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb", check=False)
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Topology:
    """Four namespaces on one switch, plus the root namespace's own veth end."""

    tag: str = field(default_factory=lambda: f"bg{os.getpid() % 100000}")
    hosts: tuple[str, ...] = ("redis", "app1", "app2")
    created: list[str] = field(default_factory=list)
    netem: bool = False

    def __post_init__(self) -> None:
        self.subnet = f"{SUBNET_BASE}.{os.getpid() % 250 + 1}"
        self.addresses = {"root": f"{self.subnet}.1", "redis": f"{self.subnet}.2", "app1": f"{self.subnet}.11",
                          "app2": f"{self.subnet}.12", "app3": f"{self.subnet}.13"}

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def create(self) -> Topology:
        reason = unavailable_reason()
        if reason:
            raise NamespaceUnavailable(reason)
        try:
            self._add_ns(self.switch)
            _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.switch, "link", "set", "br0", "up")
            # The root namespace's end: the test reaches the bots and Redis through it.
            root_if = f"{self.tag}h"
            _run("ip", "link", "add", root_if, "type", "veth", "peer", "name", "p-root", "netns", self.switch)
            _run("ip", "addr", "add", f"{self.addresses['root']}/24", "dev", root_if)
            _run("ip", "link", "set", root_if, "up")
            self._plug("p-root")
            for host in self.hosts:
                ns = self.ns(host)
                self._add_ns(ns)
                _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p-{host}",
                     "netns", self.switch)
                _run("ip", "-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                self._plug(f"p-{host}")
        except Exception:
            self.destroy()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self.created.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _plug(self, port: str) -> None:
        _run("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        _run("ip", "-n", self.switch, "link", "set", port, "up")

    def add_delay(self, host: str, one_way_ms: float) -> bool:
        """netem on both directions of `host`'s link, where the kernel has it; False when it does not."""
        first = _run("tc", "-n", self.ns(host), "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
                     f"{one_way_ms}ms", check=False)
        if first.returncode != 0:
            return False
        second = _run("tc", "-n", self.switch, "qdisc", "add", "dev", f"p-{host}", "root", "netem", "delay",
                      f"{one_way_ms}ms", check=False)
        self.netem = second.returncode == 0
        return self.netem

    def argv(self, host: str, argv: list[str]) -> list[str]:
        """`argv` run inside `host`'s namespace (root: as is)."""
        if host == "root":
            return argv
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def destroy(self) -> None:
        for name in reversed(self.created):
            _run("ip", "netns", "del", name, check=False)
        self.created.clear()
        # The root end went with its peer in the switch namespace; make sure.
        _run("ip", "link", "del", f"{self.tag}h", check=False)
