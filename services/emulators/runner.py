"""Run an aiohttp application on its own event loop in a daemon thread.

The product validates inbound JWTs with blocking ``requests.get`` inside its aiohttp handler (botframework's
``JwtTokenExtractor``); an emulator sharing that loop would deadlock, so each emulator gets a private loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from types import TracebackType
from typing import Any, Protocol

from aiohttp import web


class Servable(Protocol):
    """What `start_in_thread` needs of an emulator (base.Emulator), without importing base, which imports us."""

    def build_app(self) -> web.Application: ...

    def ssl_context(self) -> ssl.SSLContext | None: ...

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
EMULATOR_KEY: web.AppKey[Any] = web.AppKey("emulator", object)


def bind_loopback(host: str, port: int) -> socket.socket:
    """A listening socket on a loopback address; emulators must never be reachable from the network."""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"emulators bind loopback only, not {host!r}")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_for(sock: socket.socket, ssl_context: ssl.SSLContext | None) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    scheme = "https" if ssl_context else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}", port


class RunningEmulator:
    """A started app: ``.url`` (no trailing slash), ``.port``, ``.emulator`` (if any), ``.stop()``."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.app = app
        self._sock = bind_loopback(host, port)
        self.url, self.port = url_for(self._sock, ssl_context)
        self.host = host
        self._ssl_context = ssl_context
        self._shutdown_timeout = shutdown_timeout
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"emulator:{self.port}", daemon=True)
        self._stopped = False

    @property
    def emulator(self) -> Any:  # the base.Emulator served, if any
        return self.app.get(EMULATOR_KEY)

    def start(self, timeout: float = 10.0) -> RunningEmulator:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("emulator did not start")
        if self._error is not None:
            raise RuntimeError("emulator failed to start") from self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the starting thread via start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        site = web.SockSite(self._runner, self._sock, ssl_context=self._ssl_context)
        await site.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._runner is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(
    app: web.Application | Servable,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningEmulator:
    """Start ``app`` (or an ``Emulator``, which supplies its own TLS context) on a private loop and thread."""
    if not isinstance(app, web.Application):
        ssl_context = ssl_context or app.ssl_context()
        app = app.build_app()
    return RunningEmulator(app, host=host, port=port, ssl_context=ssl_context).start()
