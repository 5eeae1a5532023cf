"""HaloITSM: `GET /api/authinfo` -> `POST {auth_url}/token` (client credentials, scope all) -> bearer on /api/*.

The token is cached in process and, when a Redis client is given, in Redis (encrypted with a key derived from the
client secret) until a minute before it expires, so forked job processes do not each fetch one. A 401 drops the
token and the call is repeated once with a new one. Creates and updates are POSTs of a JSON array.

Halo's ids are per instance: priority ids map to P-levels, "closed" status ids and ticket types come from
settings. Files: `attach` posts a hidden note with a "[breakglass attachment]" header and the content (no upload).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis
import requests
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from policies.model import TicketFacts
from services.clients.http import AuthError, HttpClient, RetryPolicy, UpstreamError
from services.clients.itsm import attachment_note, html_text, numeric_ticket_id, trailing_number, unavailable

log = logging.getLogger(__name__)

SYSTEM = "Halo"
EXPIRY_MARGIN_S = 60.0


class HaloAuth:
    """Client-credentials bearer tokens for the Halo API (an `services.http.Authenticator`)."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, tenant: str | None = None,
                 redis_client: redis.Redis | None = None, key_prefix: str = "bg", timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.tenant = tenant
        self.redis = redis_client
        # One attempt per token fetch: the API call that needs the token owns the retry loop.
        self.http = HttpClient("halo-auth", base_url=self.base_url, timeout=timeout,
                               retry=RetryPolicy(max_attempts=1))
        self._auth_url: str | None = None
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()
        identity = hashlib.sha256(f"{self.base_url}|{tenant}|{client_id}".encode()).hexdigest()[:24]
        self.cache_key = f"{key_prefix}:halo-token:{identity}"
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"breakglass-halo-token",
                       info=self.cache_key.encode()).derive(client_secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self.token_requests = 0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def invalidate(self, headers: Mapping[str, str]) -> None:
        token = headers.get("Authorization", "").partition(" ")[2]
        with self._lock:
            if self._token is not None and self._token[0] == token:
                self._token = None
            cached = self._cached()
            if cached is not None and cached[0] == token:
                self._redis(lambda r: r.delete(self.cache_key))

    def token(self) -> str:
        with self._lock:
            now = time.time()
            if self._token is not None and self._token[1] > now:
                return self._token[0]
            cached = self._cached()
            if cached is not None and cached[1] > now:
                self._token = cached
                return cached[0]
            return self._fetch()

    def _fetch(self) -> str:
        try:
            if self._auth_url is None:
                info = self.http.get("api/authinfo").json()
                self._auth_url = str(info.get("auth_url") or f"{self.base_url}/auth").rstrip("/")
            response = self.http.post(f"{self._auth_url}/token", params={"tenant": self.tenant}, data={
                "grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._secret,
                "scope": "all"})
            body = response.json()
            token, expires_in = str(body["access_token"]), float(body.get("expires_in") or 3600)
        except UpstreamError as exc:
            raise AuthError(f"Halo token request failed: HTTP {exc.status} {exc.code}".strip() if exc.status
                            else f"Halo token request failed: {exc.kind}", code=exc.code or "token_failed",
                            transient=exc.unavailable or exc.throttled) from None
        except (ValueError, KeyError, TypeError):
            raise AuthError("Halo token response was not understood", code="invalid_response",
                            transient=True) from None
        self.token_requests += 1
        until = time.time() + expires_in - EXPIRY_MARGIN_S
        self._token = (token, until)
        ttl = int(expires_in - EXPIRY_MARGIN_S)
        if ttl > 0:
            blob = self._fernet.encrypt(f"{until}\n{token}".encode())
            self._redis(lambda r: r.set(self.cache_key, blob, ex=ttl))
        return token

    def _cached(self) -> tuple[str, float] | None:
        blob = self._redis(lambda r: r.get(self.cache_key))
        if not blob:
            return None
        try:
            until, _, token = self._fernet.decrypt(blob).decode().partition("\n")
            return token, float(until)
        except (InvalidToken, ValueError):
            return None

    def _redis(self, operation: Callable[[redis.Redis], Any]) -> Any:
        if self.redis is None:
            return None
        try:
            return operation(self.redis)
        except redis.RedisError as exc:
            log.warning("Halo token cache: Redis unavailable", extra={"error": type(exc).__name__})
            return None


class HaloTicketing:
    system = "halo"

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, tenant: str | None = None,
                 priority_map: Mapping[int, int] | None = None, closed_status_ids: Iterable[int] = (9,),
                 ticket_types: Mapping[int, str] | None = None, redis_client: redis.Redis | None = None,
                 key_prefix: str = "bg", timeout: float = 10.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.priority_map = dict(priority_map or {1: 1, 2: 2, 3: 3, 4: 4})
        self.closed_status_ids = frozenset(closed_status_ids)
        self.ticket_types = dict(ticket_types or {1: "incident"})
        self.incident_type_id = next((k for k, v in self.ticket_types.items() if v == "incident"), 1)
        self.auth = HaloAuth(self.base_url, client_id, client_secret, tenant=tenant, redis_client=redis_client,
                             key_prefix=key_prefix, timeout=timeout)
        self.http = HttpClient("halo", base_url=self.base_url, timeout=timeout, retry=retry, auth=self.auth,
                               sleep=sleep)

    def _call(self, action: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except UpstreamError as exc:
            raise unavailable(SYSTEM, exc, action) from None

    def _email(self, path: str, entity_id: Any, *fields: str) -> str | None:
        if not isinstance(entity_id, int) or entity_id <= 0:
            return None
        response = self._call("ticket lookup", "GET", f"{path}/{entity_id}", allow=(404,))
        if response.status_code == 404:
            return None
        record = response.json()
        return next((str(record[f]).strip().lower() for f in fields if record.get(f)), None)

    # --- Ticketing ---

    def get_ticket(self, number: str) -> TicketFacts:
        ticket_id = trailing_number(number)
        if ticket_id is None:
            return TicketFacts(number=number.strip(), system=self.system, exists=False, open=False)
        response = self._call("ticket lookup", "GET", f"api/Tickets/{ticket_id}", params={"includedetails": "true"},
                              allow=(404,))
        if response.status_code == 404:
            return TicketFacts(number=number.strip(), system=self.system, exists=False, open=False)
        ticket = response.json()
        status = ticket.get("status_id")
        priority_id = ticket.get("priority_id")
        return TicketFacts(
            number=str(ticket_id), system=self.system, exists=True, open=status not in self.closed_status_ids,
            kind=self.ticket_types.get(ticket.get("tickettype_id"), "other"),  # type: ignore[arg-type]
            priority=self.priority_map.get(priority_id) if isinstance(priority_id, int) else None,
            state=str(ticket.get("status_name") or status or ""),
            caller=self._email("api/Users", ticket.get("user_id"), "emailaddress", "email"),
            assignee=self._email("api/Agent", ticket.get("agent_id"), "email", "emailaddress"),
            assignment_group=str(ticket.get("team") or "") or None,
            short_description=str(ticket.get("summary") or ""), url=f"{self.base_url}/ticket?id={ticket_id}",
            sys_id=str(ticket_id))

    def _hidden_note(self, ticket: TicketFacts, note: str, action: str) -> None:
        ticket_id = numeric_ticket_id(SYSTEM, ticket, action)
        # Halo shows an action's note as HTML: the text (a requester's words among it) goes in escaped.
        self._call(action, "POST", "api/Actions", json=[{"ticket_id": ticket_id, "outcome": "Private Note",
                                                         "note": html_text(note), "hiddenfromuser": True}])

    def add_note(self, ticket: TicketFacts, text: str) -> None:
        self._hidden_note(ticket, text, "note")

    def attach(self, ticket: TicketFacts, filename: str, content: bytes, content_type: str) -> None:
        header, text = attachment_note(filename, content, content_type)
        self._hidden_note(ticket, f"{header}\n\n{text}", "attachment")

    def open_child_incident(self, parent: TicketFacts | None, short_description: str, description: str) -> str:
        item: dict[str, Any] = {"summary": short_description[:250], "details": html_text(description),
                                "tickettype_id": self.incident_type_id}
        if parent is not None:
            item["parent_id"] = numeric_ticket_id(SYSTEM, parent, "child incident")
        body = self._call("child incident", "POST", "api/Tickets", json=[item]).json()
        saved = body[0] if isinstance(body, list) else body
        return str(saved["id"])

    def open_incident(self, short_description: str, description: str, *, priority: int = 1) -> TicketFacts:
        item: dict[str, Any] = {"summary": short_description[:250], "details": html_text(description),
                                "tickettype_id": self.incident_type_id}
        # Halo's priority ids are per instance (HALO_PRIORITY_MAP: id -> P-level): the id mapped to this P-level.
        ids = sorted(pid for pid, level in self.priority_map.items() if level == priority)
        if ids:
            item["priority_id"] = ids[0]
        body = self._call("incident", "POST", "api/Tickets", json=[item]).json()
        saved = body[0] if isinstance(body, list) else body
        ticket_id = int(saved["id"])
        return TicketFacts(number=str(ticket_id), system=self.system, exists=True, open=True, kind="incident",
                           priority=priority, short_description=short_description[:250],
                           url=f"{self.base_url}/ticket?id={ticket_id}", sys_id=str(ticket_id))
