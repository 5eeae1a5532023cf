"""The per-emulator call log: every request the product made, for assertions and benchmarks.

Secrets are redacted at record time (Authorization keeps its scheme and first 8 characters; form secrets are
cut the same way) so a log dumped into a CI artefact never leaks a usable credential.
"""

from __future__ import annotations

import builtins
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

REDACTED_HEADERS = frozenset({"authorization", "api-key", "proxy-authorization"})
REDACTED_FORM_FIELDS = frozenset({"client_secret", "client_assertion", "password", "refresh_token"})


def redact_secret(value: str) -> str:
    """Keep an auth scheme plus the first 8 characters of the credential: enough to tell tokens apart."""
    scheme, sep, credential = value.partition(" ")
    if sep and scheme.lower() in {"bearer", "basic"}:
        return f"{scheme} {credential[:8]}..."
    return f"{value[:8]}..."


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: (redact_secret(value) if name.lower() in REDACTED_HEADERS else value)
        for name, value in headers.items()
    }


def describe_body(raw: bytes, content_type: str) -> Any:
    """Parsed JSON, a redacted form dict, text, or ``{"bytes": n}`` for binary payloads."""
    if not raw:
        return None
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        return {k: (redact_secret(v) if k in REDACTED_FORM_FIELDS else v) for k, v in form.items()}
    if ctype.endswith("json") or ctype == "":
        try:
            return json.loads(raw)
        except ValueError:
            pass
    if ctype.startswith("text/") or ctype.endswith("json") or ctype == "":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"bytes": len(raw), "content_type": ctype}


@dataclass
class CallRecord:
    method: str
    path: str
    query: dict[str, Any]
    query_string: str
    headers: dict[str, str]
    body: Any
    time: float  # wall clock (time.time()) at arrival
    monotonic: float  # time.monotonic() at arrival, for latency maths
    status: int | None = None  # None when the connection was dropped by a fault
    duration_ms: float | None = None
    fault: str | None = None  # id of the fault rule that shaped this response, if any
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CallLog:
    _records: list[CallRecord] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _seq: int = 0

    def append(self, record: CallRecord) -> None:
        with self._cond:
            self._seq += 1
            record.seq = self._seq
            self._records.append(record)
            self._cond.notify_all()

    def completed(self) -> None:
        """Wake waiters once a record's status is filled in."""
        with self._cond:
            self._cond.notify_all()

    def list(self, path: str | None = None, method: str | None = None) -> list[CallRecord]:
        """Records whose path contains ``path`` (substring) and whose method equals ``method``."""
        with self._cond:
            return [r for r in self._records if _matches(r, path, method)]

    def count(self, path: str | None = None, method: str | None = None) -> int:
        return len(self.list(path, method))

    def clear(self) -> None:
        with self._cond:
            self._records.clear()

    def wait_for(
        self,
        predicate: Callable[[builtins.list[CallRecord]], bool] | None = None,
        *,
        path: str | None = None,
        method: str | None = None,
        count: int = 1,
        timeout: float = 5.0,
    ) -> builtins.list[CallRecord]:
        """Block until ``count`` completed matching calls exist (or ``predicate(all)`` holds).

        For tests of asynchronous product behaviour (a worker posting a receipt): waiting on a condition
        variable instead of sleeping keeps them fast and deterministic.
        """

        def ready() -> bool:
            if predicate is not None:
                return predicate(builtins.list(self._records))
            done = [r for r in self._records if _matches(r, path, method) and r.duration_ms is not None]
            return len(done) >= count

        with self._cond:
            if not self._cond.wait_for(ready, timeout=timeout):
                raise TimeoutError(f"no matching call (path={path!r}, method={method!r}) within {timeout}s")
            return [r for r in self._records if _matches(r, path, method)]


def _matches(record: CallRecord, path: str | None, method: str | None) -> bool:
    if path and path not in record.path:
        return False
    return not (method and record.method.upper() != method.upper())


def now_pair() -> tuple[float, float]:
    return time.time(), time.monotonic()
