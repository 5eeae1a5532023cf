"""Outbound HTTP plumbing shared by the Graph, ITSM and Bot Connector clients (sync, on `requests.Session`).

What every client gets from `HttpClient`:

- per-client timeouts (connect, read), shrunk to what is left of the retry budget;
- bounded retries through `tenacity`: at most `RetryPolicy.max_attempts` attempts and about `budget_s` seconds;
  429/503 honour `Retry-After` (seconds, fractional like "2.128", or an HTTP date) and never retry before it;
  other 5xx, connection errors and timeouts back off exponentially with jitter; other 4xx are not retried.
  A `Retry-After` that does not fit in the budget ends the call at once with `retry_after` set, so the job
  layer can reschedule instead of a worker sleeping for half an hour;
- an optional shared write limiter (`services.limiter.RateLimiter`) passed before each write attempt;
- an optional bearer `Authenticator`, asked for headers on every attempt; a 401 invalidates the credential and
  the attempt is repeated once with a fresh one;
- call counters (`HttpClient.stats`, and per-service totals in `stats_snapshot()`) for tests and benchmarks;
- one typed failure, `UpstreamError`, that each client maps to its port's error types.

Nothing here logs headers, bodies or query strings: they may carry tokens or personal data.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import requests
import tenacity
from requests.adapters import HTTPAdapter

from services.errors import ServiceError
from services.state.limiter import RateLimitTimeout

if TYPE_CHECKING:
    from services.settings import Settings
    from services.state.limiter import RateLimiter

log = logging.getLogger(__name__)

USER_AGENT = "breakglass/0.1.0 python-requests/" + requests.__version__
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Characters kept literal in query strings: OData needs `$filter`, quotes, parentheses and commas readable, and
# spaces go on the wire as %20 (never "+", which some Graph endpoints read literally).
QUERY_SAFE = "$'(),:@/"

Timeout = float | tuple[float, float]


# --- policy and errors -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    budget_s: float = 60.0  # no retry is scheduled that would start later than this after the first attempt
    backoff_base_s: float = 0.5  # first back-off (then doubling, plus up to the same again as jitter)
    backoff_max_s: float = 10.0
    retry_after_jitter: float = 0.1  # up to this fraction of Retry-After (at most 1 s) added, never subtracted

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        # The back-off follows the budget: 0.5 s doubling up to 10 s for the default 60 s, proportionally less for a
        # tighter budget (never more), so BREAKGLASS_HTTP_RETRY_BUDGET paces the whole retry loop.
        budget = settings.http_retry_budget_s
        return cls(max_attempts=settings.http_max_attempts, budget_s=budget,
                   backoff_base_s=min(0.5, budget / 120), backoff_max_s=min(10.0, budget / 6))


class UpstreamError(ServiceError):
    """A call that failed for good. `kind`: "http" (an error status), "connection", "timeout", "auth" (no
    credential could be obtained), "ratelimit" (our own limiter would not give a slot in time) or "invalid"
    (the request could not be sent at all). `status` is None when there was no HTTP response."""

    def __init__(self, service: str, method: str, url: str, *, kind: str = "http", status: int | None = None,
                 code: str = "", message: str = "", retry_after: float | None = None, attempts: int = 1,
                 body: Any = None):
        self.service = service
        self.method = method
        self.path = urlsplit(url).path  # never the query: it may carry personal data
        self.kind = kind
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.attempts = attempts
        self.body = body
        what = f"HTTP {status}" if status is not None else kind
        detail = ": ".join(p for p in (code, message) if p)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        wait = f", retry after {retry_after:g}s" if retry_after is not None else ""
        super().__init__(f"{service} {method} {self.path}: {what}{' ' + detail if detail else ''}{tries}{wait}")

    @property
    def throttled(self) -> bool:
        return self.status == 429 or self.kind == "ratelimit"

    @property
    def unavailable(self) -> bool:
        """No usable answer: the upstream is down, overloaded or unreachable (worth trying again later)."""
        return self.kind in {"connection", "timeout"} or (self.status is not None and self.status >= 500) or (
            self.kind == "auth" and self.status is None)


class AuthError(ServiceError):
    """A credential could not be obtained; `transient` when trying again later may help."""

    def __init__(self, message: str, *, code: str = "", transient: bool = False):
        self.code = code
        self.transient = transient
        super().__init__(message)


class Authenticator(Protocol):
    def headers(self) -> dict[str, str]:
        """Authorization headers for the next attempt (may raise AuthError)."""
        ...

    def invalidate(self, headers: Mapping[str, str]) -> None:
        """The upstream rejected these headers (401): forget the credential they carry."""
        ...


# --- Retry-After and URLs --------------------------------------------------------------------------------------

def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds (fractional allowed) or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def encode_query(params: Mapping[str, Any]) -> str:
    """`a=1&$filter=x%20eq%20'y'`: values percent-encoded with %20 for spaces; None values dropped."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{quote(str(key), safe=QUERY_SAFE)}={quote(str(value), safe=QUERY_SAFE)}")
    return "&".join(parts)


def join_url(base: str, path: str, params: Mapping[str, Any] | None = None) -> str:
    """`base` with or without a trailing slash, `path` with or without a leading one."""
    url = path if path.startswith(("https://", "http://")) else base.rstrip("/") + "/" + path.lstrip("/")
    query = encode_query(params) if params else ""
    if query:
        url += ("&" if "?" in url else "?") + query
    return url


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def error_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500] if response.text else None


def default_error_parser(response: requests.Response) -> tuple[str, str]:
    """(code, message) from the usual envelopes: {"error": {"code", "message"}}, {"error": "x",
    "error_description"}, {"code", "message"}, {"message"}."""
    body = error_body(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("code") or ""), str(error.get("message") or error.get("detail") or "")
        if isinstance(error, str):
            return error, str(body.get("error_description") or body.get("message") or "").split("\r\n")[0]
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):  # Freshworks validation errors
            first = errors[0]
            return str(first.get("code") or ""), f"{body.get('description') or 'invalid'}: " \
                f"{first.get('field') or ''} {first.get('message') or ''}".strip()
        return str(body.get("code") or body.get("ClassName") or ""), str(body.get("message") or
                                                                          body.get("Message") or "")
    return "", (body if isinstance(body, str) else "")[:200]


# --- statistics ------------------------------------------------------------------------------------------------

@dataclass
class CallStats:
    """Counters of one client (or, in `stats_snapshot()`, of every client of one service)."""

    requests: int = 0  # logical calls (HttpClient.request)
    sends: int = 0  # HTTP requests actually sent, retries and re-authentications included
    retries: int = 0
    failures: int = 0  # logical calls that ended in UpstreamError
    throttled: int = 0  # 429 responses received
    reauthenticated: int = 0  # 401s answered by fetching a fresh credential
    waited_s: float = 0.0  # slept between attempts (Retry-After and back-off)
    limiter_wait_s: float = 0.0  # waited for the shared write limiter
    statuses: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "sends": self.sends, "retries": self.retries, "failures": self.failures,
                "throttled": self.throttled, "reauthenticated": self.reauthenticated,
                "waited_s": round(self.waited_s, 3), "limiter_wait_s": round(self.limiter_wait_s, 3),
                "statuses": dict(sorted(self.statuses.items()))}


# Reads the environment for HttpClient._environment (trust_env on); it never sends anything.
_ENVIRONMENT = requests.Session()


_TOTALS: dict[str, CallStats] = {}
_TOTALS_LOCK = threading.Lock()


def stats_snapshot() -> dict[str, dict[str, Any]]:
    """Per-service totals of every client in this process (for benchmarks)."""
    with _TOTALS_LOCK:
        return {name: stats.as_dict() for name, stats in sorted(_TOTALS.items())}


def reset_stats() -> None:
    with _TOTALS_LOCK:
        _TOTALS.clear()


# --- the client ------------------------------------------------------------------------------------------------

class _Retry(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, kind: str, *, response: requests.Response | None = None, retry_after: float | None = None,
                 message: str = ""):
        self.kind = kind
        self.response = response
        self.retry_after = retry_after
        self.message = message
        super().__init__(kind)


class _Wait:
    """Retry-After when the upstream gave one (plus a little jitter, never less), else exponential back-off."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        # base * 2**(n-1), capped, plus up to `base` of jitter (tenacity 8 and 9 alike).
        self.backoff = tenacity.wait_exponential(multiplier=policy.backoff_base_s, max=policy.backoff_max_s) + \
            tenacity.wait_random(0, policy.backoff_base_s)

    def __call__(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            extra = min(1.0, exc.retry_after * self.policy.retry_after_jitter)
            return exc.retry_after + random.uniform(0.0, extra)
        return min(self.policy.backoff_max_s, float(self.backoff(state)))


def timeout_pair(total: float) -> tuple[float, float]:
    return (min(5.0, total), total)


class HttpClient:
    def __init__(self, service: str, *, base_url: str = "", timeout: Timeout = 15.0,
                 retry: RetryPolicy | None = None, auth: Authenticator | None = None,
                 basic_auth: tuple[str, str] | None = None, limiter: RateLimiter | None = None,
                 limit_methods: Iterable[str] = WRITE_METHODS, limiter_timeout_s: float = 30.0,
                 error_parser: Callable[[requests.Response], tuple[str, str]] = default_error_parser,
                 headers: Mapping[str, str] | None = None, sleep: Callable[[float], None] = time.sleep,
                 pool_maxsize: int = 16):
        self.service = service
        self.base_url = base_url
        self.timeout = timeout if isinstance(timeout, tuple) else timeout_pair(timeout)
        self.retry = retry or RetryPolicy()
        self.auth = auth
        self.basic_auth = basic_auth
        self.limiter = limiter
        self.limit_methods = frozenset(m.upper() for m in limit_methods)
        self.limiter_timeout_s = limiter_timeout_s
        self.error_parser = error_parser
        self.default_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self._sleep = sleep
        self._pool_maxsize = pool_maxsize
        self.stats = CallStats()
        self._stats_lock = threading.Lock()
        self._session: requests.Session | None = None
        self._session_pid = 0
        self._session_lock = threading.Lock()
        self._environment_cache: dict[str, dict[str, Any]] = {}

    # --- session (one per process: a forked RQ work horse must not reuse the parent's sockets) ---

    @property
    def session(self) -> requests.Session:
        pid = os.getpid()
        with self._session_lock:
            if self._session is None or self._session_pid != pid:
                self._session = self._new_session()
                self._session_pid = pid
            return self._session

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # requests re-reads the environment (proxies, CA bundle, ~/.netrc) on every call, about 0.1 ms each; read
        # it once per origin instead (_environment). Credentials from .netrc are never wanted.
        session.trust_env = False
        self._environment_cache = {}
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_maxsize, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update(self.default_headers)
        if self.basic_auth is not None:
            session.auth = self.basic_auth
        return session

    def _environment(self, url: str) -> dict[str, Any]:
        """The proxies (HTTP(S)_PROXY, NO_PROXY) and CA bundle requests itself would take from the environment for
        this URL, by requests' own rules (`merge_environment_settings`), read once per origin."""
        key = origin(url)
        found = self._environment_cache.get(key)
        if found is None:
            found = self._environment_cache[key] = _ENVIRONMENT.merge_environment_settings(url, {}, None, None, None)
        return found

    def close(self) -> None:
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        return join_url(self.base_url, path, params)

    # --- counting ---

    def _count(self, **deltas: float) -> None:
        status = deltas.pop("status", None)

        def apply(stats: CallStats) -> None:
            for name, delta in deltas.items():
                setattr(stats, name, getattr(stats, name) + delta)
            if status is not None:
                stats.statuses[int(status)] += 1

        with self._stats_lock:
            apply(self.stats)
        with _TOTALS_LOCK:
            apply(_TOTALS.setdefault(self.service, CallStats()))

    # --- requests ---

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                data: bytes | str | Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                allow: Iterable[int] = (), limit: bool | None = None) -> requests.Response:
        """Send with retries. Returns a 2xx response, or one whose status is in `allow` (e.g. 404 for a lookup);
        anything else raises UpstreamError. `limit` overrides whether the shared limiter applies (default: for
        the client's write methods)."""
        method = method.upper()
        url = self.url(path, params)
        allowed = frozenset(allow)
        limited = self.limiter is not None and (method in self.limit_methods if limit is None else limit)
        self._count(requests=1)
        started = time.monotonic()
        attempts = 0

        def attempt() -> requests.Response:
            nonlocal attempts
            attempts += 1
            return self._attempt(method, url, json=json, data=data, headers=headers, allowed=allowed,
                                 limited=limited, started=started, attempts=attempts)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts) | tenacity.stop_before_delay(
                self.retry.budget_s),
            wait=_Wait(self.retry),
            retry=tenacity.retry_if_exception_type(_Retry),
            sleep=self._sleep_counted,
            before_sleep=lambda state: self._log_retry(method, url, state),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retry as last:
            self._count(failures=1)
            raise self._give_up(method, url, last, attempts) from None
        except UpstreamError:
            self._count(failures=1)
            raise

    def _sleep_counted(self, seconds: float) -> None:
        self._count(retries=1, waited_s=seconds)
        self._sleep(seconds)

    def _log_retry(self, method: str, url: str, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        status = exc.response.status_code if isinstance(exc, _Retry) and exc.response is not None else None
        log.info("retrying %s call", self.service, extra={
            "service": self.service, "method": method, "path": urlsplit(url).path, "attempt": state.attempt_number,
            "status": status, "reason": getattr(exc, "kind", ""), "wait_s": round(state.upcoming_sleep, 3)})

    def _attempt_timeout(self, started: float) -> tuple[float, float]:
        left = self.retry.budget_s - (time.monotonic() - started)
        connect, read = self.timeout
        read = min(read, max(1.0, left))  # never longer than configured; near the budget's end, still 1 s
        return min(connect, read), read

    def _attempt(self, method: str, url: str, *, json: Any, data: Any, headers: Mapping[str, str] | None,
                 allowed: frozenset[int], limited: bool, started: float, attempts: int) -> requests.Response:
        reauthenticated = False
        while True:
            request_headers = dict(headers or {})
            if self.auth is not None:
                try:
                    request_headers.update(self.auth.headers())
                except AuthError as exc:
                    if exc.transient:
                        raise _Retry("auth", message=str(exc)) from None
                    raise UpstreamError(self.service, method, url, kind="auth", status=401, code=exc.code,
                                        message=str(exc), attempts=attempts) from None
            if limited:  # the slot is taken right before sending: a slow token fetch must not bunch writes up
                self._acquire_slot(method, url, attempts)
            response = self._send(method, url, json=json, data=data, headers=request_headers, started=started,
                                  attempts=attempts)
            if response.status_code == 401 and self.auth is not None and not reauthenticated:
                reauthenticated = True
                self._count(reauthenticated=1)
                self.auth.invalidate(request_headers)
                continue
            break
        status = response.status_code
        if 200 <= status < 300 or status in allowed:
            return response
        if status in RETRY_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in RETRY_AFTER_STATUSES \
                else None
            if limited and retry_after:
                self.limiter.hold(retry_after)  # type: ignore[union-attr]
            raise _Retry("http", response=response, retry_after=retry_after)
        code, message = self.error_parser(response)
        raise UpstreamError(self.service, method, url, status=status, code=code, message=message,
                            attempts=attempts, body=error_body(response))

    def _acquire_slot(self, method: str, url: str, attempts: int) -> None:
        assert self.limiter is not None
        try:
            waited = self.limiter.acquire(timeout=self.limiter_timeout_s)
        except RateLimitTimeout as exc:
            raise UpstreamError(self.service, method, url, kind="ratelimit", status=None, code="ClientRateLimited",
                                message="the shared write limiter has no free slot", retry_after=exc.retry_after,
                                attempts=attempts) from None
        if waited:
            self._count(limiter_wait_s=waited)

    def _send(self, method: str, url: str, *, json: Any, data: Any, headers: dict[str, str], started: float,
              attempts: int) -> requests.Response:
        self._count(sends=1)
        environment = self._environment(url)
        try:
            response = self.session.request(method, url, json=json, data=data, headers=headers,
                                            proxies=environment["proxies"], verify=environment["verify"],
                                            timeout=self._attempt_timeout(started), allow_redirects=False)
        except requests.Timeout:
            raise _Retry("timeout", message="timed out") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry("connection", message=type(exc).__name__) from None
        except requests.RequestException as exc:
            raise UpstreamError(self.service, method, url, kind="invalid", message=type(exc).__name__,
                                attempts=attempts) from None
        self._count(status=response.status_code, throttled=1 if response.status_code == 429 else 0)
        return response

    def _give_up(self, method: str, url: str, last: _Retry, attempts: int) -> UpstreamError:
        if last.response is not None:
            code, message = self.error_parser(last.response)
            return UpstreamError(self.service, method, url, status=last.response.status_code, code=code,
                                 message=message, retry_after=last.retry_after, attempts=attempts,
                                 body=error_body(last.response))
        if last.kind == "auth":
            return UpstreamError(self.service, method, url, kind="auth", code="TokenUnavailable",
                                 message=last.message, attempts=attempts)
        return UpstreamError(self.service, method, url, kind=last.kind, code=last.kind.capitalize(),
                             message=last.message, attempts=attempts)


class BearerAuth:
    """An Authenticator over anything with `token()` (and optionally `invalidate(token)`)."""

    def __init__(self, provider: Any):
        self.provider = provider

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.provider.token()}"}

    def invalidate(self, headers: Mapping[str, str]) -> None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        invalidate = getattr(self.provider, "invalidate", None)
        if scheme.lower() == "bearer" and token and invalidate is not None:
            invalidate(token)
