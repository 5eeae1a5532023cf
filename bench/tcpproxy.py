"""A small TCP forwarder with an optional one-way delay, for the multi-host harness (bench/multihost.py).

    python -m bench.tcpproxy --map 10.213.0.2:6380=127.0.0.1:6379 [--map ...] [--delay-ms 0.5] [--stats FILE]

The kernels here have no netem ("qdisc kind is unknown"), so the harness adds Redis's network latency here: every
chunk is held `delay` seconds in each direction (0.5 ms each way = 1 ms round trip), in order, on threads, because
asyncio's timers round up to whole milliseconds and a millisecond per direction would double the round trip.
With a delay of 0 it is a plain forwarder, used to carry the emulators' loopback ports into the app namespaces
(the emulators never bind anything but loopback).

`--stats FILE` writes, on SIGUSR1 and at exit, how many request bursts each mapping carried: a burst is what a
client sends after the server last answered, i.e. one round trip (a pipeline is one burst).
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass
class Counters:
    """Per client address: connections opened and round trips carried."""

    by_peer: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, peer: str, connections: int = 0, round_trips: int = 0) -> None:
        with self.lock:
            entry = self.by_peer.setdefault(peer, [0, 0])
            entry[0] += connections
            entry[1] += round_trips


class DelayedPipe:
    """One direction of one connection: read chunks, hold each until its due time, write them in order."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float, on_chunk: object = None):
        self.src, self.dst, self.delay = src, dst, delay
        self.on_chunk = on_chunk
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.ready = threading.Condition()
        self.closed = False

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()
        if self.delay > 0:
            threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(CHUNK)
                if not data:
                    break
                if callable(self.on_chunk):
                    self.on_chunk()
                if self.delay <= 0:
                    self.dst.sendall(data)
                    continue
                with self.ready:
                    self.queue.append((time.monotonic() + self.delay, data))
                    self.ready.notify()
        except OSError:
            pass
        finally:
            with self.ready:
                self.closed = True
                self.ready.notify()
            if self.delay <= 0:
                _shutdown(self.dst)

    def _write(self) -> None:
        try:
            while True:
                with self.ready:
                    while not self.queue and not self.closed:
                        self.ready.wait()
                    if not self.queue:
                        break
                    due, data = self.queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(self.dst)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class Mapping:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay: float):
        self.listen, self.target, self.delay = listen, target, delay
        self.counters = Counters()
        self.server = socket.create_server(listen, reuse_port=False)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def serve(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, peer = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client, peer[0]), daemon=True).start()

    def _connect(self, client: socket.socket, peer: str) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counters.add(peer, connections=1)
        # The client sent since the server last answered: the next client chunk starts a new round trip.
        answered = [True]

        def client_sent() -> None:
            if answered[0]:
                answered[0] = False
                self.counters.add(peer, round_trips=1)

        def server_sent() -> None:
            answered[0] = True

        DelayedPipe(client, upstream, self.delay, client_sent).start()
        DelayedPipe(upstream, client, self.delay, server_sent).start()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tcpproxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", action="append", required=True, metavar="LISTEN=TARGET",
                        help="host:port to listen on = host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per direction, milliseconds")
    parser.add_argument("--stats", help="file to write per-mapping counters to (SIGUSR1 and exit)")
    args = parser.parse_args(argv)
    mappings = []
    for spec in args.map:
        listen, _, target = spec.partition("=")
        mappings.append(Mapping(_address(listen), _address(target), args.delay_ms / 1000.0))

    def write_stats(*_: object) -> None:
        if args.stats:
            data = {}
            for m in mappings:
                with m.counters.lock:
                    data[f"{m.listen[0]}:{m.listen[1]}"] = {
                        peer: {"connections": c, "round_trips": r} for peer, (c, r) in m.counters.by_peer.items()}
            with open(args.stats + ".tmp", "w") as fh:
                json.dump(data, fh)
            import os

            os.replace(args.stats + ".tmp", args.stats)

    stop = threading.Event()
    signal.signal(signal.SIGUSR1, write_stats)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for mapping in mappings:
        mapping.serve()
    print("PROXY READY", flush=True)
    while not stop.wait(0.5):
        pass
    write_stats()
    return 0


if __name__ == "__main__":
    sys.exit(main())
