"""The common emulator plumbing: call log, fault injection, state/clock control API, thread start.

Concurrency model: handlers run on the emulator's private loop thread while tests poke the same state from
the test thread through the Python API, so every state read or write happens under ``self.lock`` and never
spans an ``await`` (handlers read the body first, then mutate synchronously).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from aiohttp import web

from .calls import CallLog, CallRecord, describe_body, now_pair, redact_headers
from .clock import Clock, NowFn
from .faults import FaultInjector, FaultRule, FaultRuleError
from .responses import any_body_response, json_response
from .runner import EMULATOR_KEY, RunningEmulator, start_in_thread

log = logging.getLogger("services.emulators")

CONTROL_PREFIX = "/_emulator/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StateError(ValueError):
    """A state document the emulator cannot apply (answered with HTTP 400)."""


class Emulator:
    """Base class. Subclasses implement the ``_``-prefixed hooks and ``add_routes``."""

    name: ClassVar[str] = "emulator"

    def __init__(self, *, clock: Clock | NowFn | None = None, fault_seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.clock = Clock.wrap(clock)
        self._initial_offset = self.clock.offset_s
        self.calls = CallLog()
        self.faults = FaultInjector(seed=fault_seed)
        self.status_counts: Counter[int] = Counter()
        self._seeds: list[dict[str, Any]] = []
        with self.lock:
            self._clear_state()

    # ----- hooks for subclasses -------------------------------------------------------------------------
    def _clear_state(self) -> None:
        """Reset domain state to empty (constructor options such as credentials survive)."""

    def _snapshot(self) -> dict[str, Any]:
        return {}

    def _apply_state(self, data: dict[str, Any]) -> None:
        if data:
            raise StateError(f"unknown state keys: {sorted(data)}")

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def preflight(self, request: web.Request) -> web.StreamResponse | None:
        """Auth / throttling; return a response to short-circuit the handler."""
        return None

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        """Headers and body a fault with only a status gets: each service's own error envelope."""
        return {}, {"error": {"code": "EmulatedFault", "message": f"Injected HTTP {status}"}}

    def unknown_route(self, request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
        raise exc

    def ssl_context(self) -> ssl.SSLContext | None:
        return None

    # ----- Python API -----------------------------------------------------------------------------------
    def seed(self, data: dict[str, Any]) -> None:
        """Apply ``data`` and remember it, so ``reset()`` returns to this seeded baseline."""
        with self.lock:
            self.set_state(data)
            self._seeds.append(copy.deepcopy(data))

    def set_state(self, data: dict[str, Any]) -> None:
        """Replace the parts of the state named by ``data``'s keys (not remembered across ``reset``)."""
        data = dict(data)
        with self.lock:
            if "clock_offset_s" in data:
                self.clock.set_offset(float(data.pop("clock_offset_s")))
            self._apply_state(data)

    def state(self) -> dict[str, Any]:
        with self.lock:
            snapshot = self._snapshot()
            snapshot["clock"] = self.clock.to_json()
            snapshot["status_counts"] = {str(k): v for k, v in sorted(self.status_counts.items())}
            return snapshot

    def reset(self, *, empty: bool = False) -> None:
        """Back to the seeded baseline (or to nothing with ``empty=True``); clears calls, faults, clock."""
        with self.lock:
            self._clear_state()
            if empty:
                self._seeds.clear()
            for data in self._seeds:
                self.set_state(copy.deepcopy(data))
            self.calls.clear()
            self.faults.clear()
            self.faults.reseed()
            self.status_counts.clear()
            self.clock.set_offset(self._initial_offset)

    def add_fault(self, rule: FaultRule | None = None, /, **kwargs: Any) -> FaultRule:
        return self.faults.add(rule, **kwargs)

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=32 * 1024 * 1024)
        app[EMULATOR_KEY] = self
        self._add_control_routes(app)
        self.add_routes(app)
        return app

    def start(self, port: int = 0, host: str = "127.0.0.1") -> RunningEmulator:
        return start_in_thread(self.build_app(), host=host, port=port, ssl_context=self.ssl_context())

    # ----- request pipeline -----------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        raw = await request.read()  # cached by aiohttp, so handlers can read it again
        wall, mono = now_pair()
        record = CallRecord(
            method=request.method,
            path=request.path,
            query=_query_dict(request),
            query_string=request.query_string,
            headers=redact_headers(request.headers),
            body=describe_body(raw, request.headers.get("Content-Type", "")),
            time=wall,
            monotonic=mono,
        )
        self.calls.append(record)
        try:
            response = await self._dispatch(request, handler, record)
        except web.HTTPException as exc:
            self._finish(record, exc.status, mono)
            raise
        except asyncio.CancelledError:
            self._finish(record, None, mono)
            raise
        except Exception as exc:
            log.exception("%s emulator crashed on %s %s", self.name, request.method, request.path)
            response = json_response(
                {"error": {"code": "EmulatorInternalError", "message": repr(exc)}}, status=500
            )
        self._finish(record, response.status, mono)
        return response

    async def _dispatch(
        self, request: web.Request, handler: Handler, record: CallRecord
    ) -> web.StreamResponse:
        rule = self.faults.match(request.method, request.path)
        if rule is not None and rule.after:
            record.fault = rule.id
            response = await self._handle(request, handler)
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000.0)
            if rule.drop:
                _reset_connection(request)
                raise asyncio.CancelledError
            return response
        if rule is not None:
            record.fault = rule.id
            if rule.latency_ms:
                await asyncio.sleep(rule.latency_ms / 1000.0)
            if rule.drop:
                _reset_connection(request)
                raise asyncio.CancelledError  # nothing may be written after the reset
            if rule.status is not None:
                return self._fault_response(rule, request)
        return await self._handle(request, handler)

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        early = await self.preflight(request)  # auth first: real services answer 401 even for bad paths
        if early is not None:
            return early
        router_error = getattr(request.match_info, "http_exception", None)
        if router_error is not None:
            return self.unknown_route(request, router_error)
        return await handler(request)

    def _fault_response(self, rule: FaultRule, request: web.Request) -> web.StreamResponse:
        assert rule.status is not None
        default_headers, default_body = self.fault_defaults(rule.status, request)
        headers = {**default_headers, **rule.headers}
        body = rule.body if rule.body is not None else default_body
        return any_body_response(rule.status, body, headers)

    def _finish(self, record: CallRecord, status: int | None, started: float) -> None:
        record.status = status
        record.duration_ms = round((time.monotonic() - started) * 1000.0, 3)
        if status is not None:
            with self.lock:
                self.status_counts[status] += 1
        self.calls.completed()

    # ----- control API ----------------------------------------------------------------------------------
    def _add_control_routes(self, app: web.Application) -> None:
        p = CONTROL_PREFIX
        app.router.add_get(p + "health", self._h_health)
        app.router.add_get(p + "calls", self._h_calls)
        app.router.add_delete(p + "calls", self._h_clear_calls)
        app.router.add_get(p + "faults", self._h_faults)
        app.router.add_post(p + "faults", self._h_add_faults)
        app.router.add_delete(p + "faults", self._h_clear_faults)
        app.router.add_delete(p + "faults/{fault_id}", self._h_delete_fault)
        app.router.add_get(p + "state", self._h_state)
        app.router.add_post(p + "state", self._h_set_state)
        app.router.add_post(p + "reset", self._h_reset)
        app.router.add_get(p + "clock", self._h_clock)
        app.router.add_post(p + "clock", self._h_set_clock)

    async def _h_health(self, request: web.Request) -> web.Response:
        return json_response({"name": self.name, "ok": True})

    async def _h_calls(self, request: web.Request) -> web.Response:
        records = self.calls.list(request.query.get("path"), request.query.get("method"))
        return json_response([r.to_json() for r in records])

    async def _h_clear_calls(self, request: web.Request) -> web.Response:
        self.calls.clear()
        return web.Response(status=204)

    async def _h_faults(self, request: web.Request) -> web.Response:
        return json_response([r.to_json() for r in self.faults.active()])

    async def _h_add_faults(self, request: web.Request) -> web.Response:
        data = await _json_or_none(request)
        items = data if isinstance(data, list) else [data]
        try:
            if not all(isinstance(i, dict) for i in items):
                raise FaultRuleError("a fault is a JSON object (or a list of them)")
            rules = [FaultRule.from_json(i) for i in items]
        except FaultRuleError as exc:
            return json_response({"error": str(exc)}, status=400)
        added = [self.faults.add(r).to_json() for r in rules]
        return json_response(added if isinstance(data, list) else added[0], status=201)

    async def _h_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.Response(status=204)

    async def _h_delete_fault(self, request: web.Request) -> web.Response:
        found = self.faults.remove(request.match_info["fault_id"])
        return web.Response(status=204 if found else 404)

    async def _h_state(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    async def _h_set_state(self, request: web.Request) -> web.Response:
        data = await _json_or_none(request)
        if not isinstance(data, dict):
            return json_response({"error": "state must be a JSON object"}, status=400)
        try:
            self.set_state(data)
        except (StateError, ValueError, KeyError, TypeError) as exc:
            return json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return json_response(self.state())

    async def _h_reset(self, request: web.Request) -> web.Response:
        data = await _json_or_none(request)
        self.reset(empty=bool(isinstance(data, dict) and data.get("empty")))
        return json_response(self.state())

    async def _h_clock(self, request: web.Request) -> web.Response:
        return json_response(self.clock.to_json())

    async def _h_set_clock(self, request: web.Request) -> web.Response:
        data = await _json_or_none(request)
        if not isinstance(data, dict) or not ({"offset_s", "advance_s"} & set(data)):
            return json_response({"error": 'expected {"offset_s": n} or {"advance_s": n}'}, status=400)
        if "offset_s" in data:
            self.clock.set_offset(float(data["offset_s"]))
        if "advance_s" in data:
            self.clock.advance(float(data["advance_s"]))
        return json_response(self.clock.to_json())


def _query_dict(request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        out[key] = values[0] if len(values) == 1 else values
    return out


async def _json_or_none(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _reset_connection(request: web.Request) -> None:
    """Abort with SO_LINGER 0 so the client sees ECONNRESET, like a crashed upstream or a proxy cut."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
