"""One structured line per HTTP request: method, path, status, duration. Never the body, the query string (a
webhook's or a probe's parameters) or a header (bearer tokens)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger("breakglass.access")


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.info("%s %s %s", request.method, request.path, response.status,
                 extra={"method": request.method, "path": request.path[:200], "status": response.status,
                        "duration_ms": round(time * 1000, 3)})
