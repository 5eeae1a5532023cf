"""Small helpers for building JSON responses and reading request bodies the way real services do."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False)


def json_response(
    data: Any,
    status: int = 200,
    headers: Mapping[str, str | None] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    """A JSON response whose Content-Type is exactly ``content_type`` (services differ on the parameters)."""
    merged = {k: v for k, v in (headers or {}).items() if v is not None and k.lower() != "content-type"}
    for name, value in (headers or {}).items():
        if name.lower() == "content-type" and value:
            content_type = value
    merged["Content-Type"] = content_type
    text = None if data is None else dumps(data)
    return web.Response(status=status, text=text, headers=merged)


def empty_response(status: int = 204, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=dict(headers or {}))


def any_body_response(
    status: int, body: Any, headers: Mapping[str, str | None], default_type: str = "application/json"
) -> web.Response:
    """A fault-injected response: JSON for dicts/lists, text for strings, empty for None."""
    if body is None:
        clean = {k: v for k, v in headers.items() if v is not None}
        return web.Response(status=status, headers=clean)
    if isinstance(body, str):
        clean = {k: v for k, v in headers.items() if v is not None}
        clean.setdefault("Content-Type", "text/plain")
        return web.Response(status=status, text=body, headers=clean)
    return json_response(body, status=status, headers=headers, content_type=default_type)


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body; raises ``ValueError`` for empty or malformed bodies."""
    raw = await request.read()
    if not raw:
        raise ValueError("empty request body")
    return json.loads(raw)


def origin(request: web.Request) -> str:
    """``scheme://host:port`` the client used to reach us (the emulators advertise themselves by it)."""
    return f"{request.scheme}://{request.host}"
