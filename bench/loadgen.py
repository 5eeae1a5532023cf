"""A light HTTP/1.1 load generator on asyncio streams (keep-alive connections, pre-serialised requests).

Two CPU cores are shared by the generator and the system under test, so the generator must cost as little as
possible: requests are built (and tokens minted) before the clock starts, each connection sends raw bytes and
parses only the status line and Content-Length, and no HTTP client library sits in between. Its own CPU time is
measured (`process_time`) and reported with every load measurement.

- `open_loop`: requests are *scheduled* at a fixed rate and latency is counted from the scheduled send time, so a
  slow server cannot hide its queueing by slowing the generator down (no coordinated omission).
- `closed_loop`: `concurrency` connections send back-to-back for a duration: the server's capacity.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def build_request(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=4 * 1024 * 1024)
        return self

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the bench client")
            elif key == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    sent: int = 0
    generator_cpu_s: float = 0.0
    bodies: list[bytes] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def throughput(self) -> float:
        return self.completed / self.wall_s if self.wall_s else 0.0

    @property
    def generator_cpu_share(self) -> float:
        """The generator's CPU time as a fraction of one core over the run."""
        return self.generator_cpu_s / self.wall_s if self.wall_s else 0.0


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _open_loop(url: str, requests: Sequence[bytes], rate: float, max_connections: int,
                     on_response: Callable[[int, int, bytes], None] | None, keep_bodies: bool,
                     grace_s: float) -> LoadResult:
    host, port = _target(url)
    idle: list[Connection] = []
    result = LoadResult()
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    cpu0 = time.process_time()
    tasks: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(max_connections)

    async def one(i: int, due: float) -> None:
        async with gate:
            conn = idle.pop() if idle else Connection(host, port)
            try:
                status, body = await conn.request(requests[i])
            except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError) as exc:
                result.errors[type(exc).__name__] += 1
                conn.close()
                return
            idle.append(conn)
        result.latencies_ms.append((loop.time() - due) * 1000)
        result.statuses[status] += 1
        if keep_bodies:
            result.bodies.append(body)
        if on_response is not None:
            on_response(i, status, body)

    for i in range(len(requests)):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
        result.sent += 1
    # A server that cannot keep up would make the run last N / capacity: give up `grace_s` after the last send and
    # count what is still outstanding as timed out (with its latency so far, so the percentiles still see it).
    _, late = await asyncio.wait(tasks, timeout=grace_s)
    if late:
        now = loop.time()
        for task in late:
            task.cancel()
        result.errors["timeout"] += len(late)
        index = {id(t): i for i, t in enumerate(tasks)}
        result.latencies_ms += [(now - (start + index[id(t)] / rate)) * 1000 for t in late]
        await asyncio.gather(*late, return_exceptions=True)
    result.wall_s = loop.time() - start
    result.generator_cpu_s = time.process_time() - cpu0
    for conn in idle:
        conn.close()
    return result


async def _closed_loop(url: str, make: Callable[[int], bytes], concurrency: int, duration_s: float,
                       check: Callable[[int, bytes], None] | None) -> LoadResult:
    host, port = _target(url)
    result = LoadResult()
    loop = asyncio.get_running_loop()
    counter = 0
    cpu0 = time.process_time()
    start = loop.time()
    stop_at = start + duration_s

    async def worker() -> None:
        nonlocal counter
        conn = Connection(host, port)
        while loop.time() < stop_at:
            i = counter
            counter += 1
            raw = make(i)
            began = loop.time()
            try:
                status, body = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError) as exc:
                result.errors[type(exc).__name__] += 1
                conn.close()
                continue
            result.latencies_ms.append((loop.time() - began) * 1000)
            result.statuses[status] += 1
            if check is not None:
                check(status, body)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = loop.time() - start
    result.sent = counter
    result.generator_cpu_s = time.process_time() - cpu0
    return result


def open_loop(url: str, requests: Sequence[bytes], rate: float, *, max_connections: int = 64,
              on_response: Callable[[int, int, bytes], None] | None = None, keep_bodies: bool = False,
              grace_s: float = 30.0) -> LoadResult:
    return asyncio.run(_open_loop(url, requests, rate, max_connections, on_response, keep_bodies, grace_s))


def closed_loop(url: str, make: Callable[[int], bytes], *, concurrency: int, duration_s: float,
                check: Callable[[int, bytes], None] | None = None) -> LoadResult:
    return asyncio.run(_closed_loop(url, make, concurrency, duration_s, check))
