"""Client-credentials access tokens (msal) with one token cache shared by every process through Redis.

With `breakglass worker --fork` RQ runs each job in a forked work horse, so msal's in-memory cache dies with the job,
and several workers (and bot replicas) each start with an empty one; without sharing, every one would fetch a token.
`TokenProvider.token()` therefore:

1. returns the token remembered in this process while it has more than `REFRESH_MARGIN_S` left;
2. otherwise reads the msal `SerializableTokenCache` from Redis (one GET, deserialised only when it changed) and
   uses a fresh access token from it, without constructing an msal application at all (no discovery request);
3. otherwise takes a short Redis lock (so N workers starting together make one token request, not N), re-reads
   the cache, and only then lets msal acquire a token; the cache is written back if msal changed it.

The cache blob is encrypted in Redis (Fernet, key derived from the client credential), so a Redis dump does not
hand out Graph tokens. Tokens, secrets and private keys are never logged.

msal refuses non-https authorities; for hosts other than Microsoft's own login hosts (sovereign clouds included)
`instance_discovery=False` keeps it from calling login.microsoftonline.com. Note that msal's `verify=` is
overridden by the REQUESTS_CA_BUNDLE environment variable (PROTOCOL_NOTES §4): a private CA must be in that bundle.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msal
import msal.exceptions
import redis
import requests
from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.clients.http import AuthError

if TYPE_CHECKING:
    from services.settings import Settings

log = logging.getLogger(__name__)

MICROSOFT_AUTHORITY_HOSTS = frozenset({
    "login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn", "login-us.microsoftonline.com",
})
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
BOT_FRAMEWORK_TENANT = "botframework.com"  # MultiTenant bots get their outbound tokens from this authority
REFRESH_MARGIN_S = 300  # msal counts a token with < 300 s left as expired: same rule, so both agree
CACHE_TTL_S = 24 * 3600
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "service_unavailable", "unreachable",
                              "discovery_failed"})
_UNLOCK_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

Credential = str | dict[str, str]


class TokenError(AuthError):
    """No token: `code` is the OAuth error (e.g. invalid_client); `transient` when trying later may help."""


def authority_url(host: str, tenant: str) -> str:
    return f"{host.rstrip('/')}/{tenant.strip('/')}"


def is_microsoft_host(authority: str) -> bool:
    return (urlsplit(authority).hostname or "").lower() in MICROSOFT_AUTHORITY_HOSTS


def certificate_credential(path: str | Path) -> dict[str, str]:
    """msal's certificate credential from a PEM file holding the private key and the certificate (leaf first):
    the key re-serialised alone, and the certificate's SHA-1 thumbprint (what Entra calls the x5t)."""
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
        certificates = x509.load_pem_x509_certificates(data)
    except (ValueError, TypeError) as exc:
        raise TokenError(f"{Path(path).name}: expected a PEM private key (unencrypted) and certificate",
                         code="invalid_certificate") from exc
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    thumbprint = certificates[0].fingerprint(hashes.SHA1()).hex()  # noqa: S303 - x5t is SHA-1 by definition
    return {"private_key": key_pem, "thumbprint": thumbprint}


def _credential_material(credential: Credential) -> bytes:
    if isinstance(credential, str):
        return credential.encode()
    return (credential.get("private_key") or credential.get("client_assertion") or "").encode()


def _service_error(exc: Exception) -> TokenError:
    match = re.search(r"HTTP Error: (\d{3})", str(exc))
    status = int(match.group(1)) if match else 0
    return TokenError(f"identity provider answered HTTP {status or '?'}", code="server_error" if status >= 500 else
                      f"http_{status}", transient=status >= 500 or status == 429)


class TokenProvider:
    """Access tokens for one (authority, client, scopes), cached in-process and in Redis."""

    def __init__(self, *, client_id: str, credential: Credential, authority: str, scopes: Sequence[str],
                 redis_client: redis.Redis | None = None, key_prefix: str = "bg", timeout: float = 15.0,
                 lock_ttl_s: float = 10.0, lock_wait_s: float = 10.0, poll_s: float = 0.05):
        if not client_id:
            raise TokenError("no client id configured", code="invalid_client")
        self.client_id = client_id
        self._credential = credential
        self.authority = authority.rstrip("/")
        self.scopes = list(scopes)
        self.redis = redis_client
        self.timeout = timeout
        self.lock_ttl_s = lock_ttl_s
        self.lock_wait_s = lock_wait_s
        self.poll_s = poll_s
        identity = hashlib.sha256(f"{self.authority}|{client_id}|{' '.join(sorted(self.scopes))}".encode())
        self.cache_key = f"{key_prefix}:msal:{identity.hexdigest()[:24]}"
        self.lock_key = self.cache_key + ":lock"
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"breakglass-token-cache",
                       info=self.cache_key.encode()).derive(_credential_material(credential))
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self._cache = msal.SerializableTokenCache()
        self._loaded: bytes | None = None
        self._app: msal.ConfidentialClientApplication | None = None
        self._pid = os.getpid()
        self._memo: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._redis_warned = False
        # Counters for tests and benchmarks.
        self.token_requests = 0  # tokens msal obtained from the identity provider
        self.shared_cache_hits = 0  # tokens found in the Redis cache
        self.memo_hits = 0

    # --- construction from settings ---

    @classmethod
    def for_graph(cls, settings: Settings, redis_client: redis.Redis | None = None) -> TokenProvider:
        secret = settings.entra_client_secret.get_secret_value() if settings.entra_client_secret else ""
        credential: Credential
        if secret:
            credential = secret
        elif settings.entra_client_cert_path is not None:
            credential = certificate_credential(settings.entra_client_cert_path)
        else:
            raise TokenError("neither ENTRA_CLIENT_SECRET nor ENTRA_CLIENT_CERT_PATH is set", code="invalid_client")
        return cls(client_id=settings.entra_client_id, credential=credential,
                   authority=authority_url(settings.entra_authority_host, settings.entra_tenant_id),
                   scopes=[settings.graph_scope], redis_client=redis_client, key_prefix=settings.key_prefix,
                   timeout=settings.graph_timeout_s)

    @classmethod
    def for_bot(cls, settings: Settings, redis_client: redis.Redis | None = None) -> TokenProvider:
        """Outbound Bot Connector tokens, as botbuilder gets them (PROTOCOL_NOTES §3)."""
        if settings.app_type == "UserAssignedMSI":
            raise TokenError("MicrosoftAppType=UserAssignedMSI is not supported for outbound calls",
                             code="unsupported_app_type")
        tenant = settings.app_tenant_id if settings.app_type == "SingleTenant" else BOT_FRAMEWORK_TENANT
        if not tenant:
            raise TokenError("MicrosoftAppTenantId is required for a SingleTenant bot", code="invalid_tenant")
        return cls(client_id=settings.app_id, credential=settings.app_password.get_secret_value(),
                   authority=authority_url(settings.entra_authority_host, tenant), scopes=[BOT_FRAMEWORK_SCOPE],
                   redis_client=redis_client, key_prefix=settings.key_prefix, timeout=settings.teams_timeout_s)

    # --- public API ---

    def token(self) -> str:
        with self._lock:
            if os.getpid() != self._pid:  # forked: msal's HTTP session belongs to the parent
                self._pid = os.getpid()
                self._app = None
            now = time.time()
            if self._memo is not None and self._memo[1] > now:
                self.memo_hits += 1
                return self._memo[0]
            self._load()
            cached = self._fresh_from_cache(now)
            if cached is not None:
                return cached
            return self._refresh()

    def invalidate(self, token: str) -> None:
        """The upstream rejected `token` (401): drop it here and from the shared cache."""
        with self._lock:
            if self._memo is not None and self._memo[0] == token:
                self._memo = None
            self._load()
            removed = False
            for item in list(self._cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=self.scopes,
                                                query={"client_id": self.client_id})):
                if item.get("secret") == token:
                    self._cache.remove_at(item)
                    removed = True
            if removed:
                self._save()

    # --- internals ---

    def _fresh_from_cache(self, now: float) -> str | None:
        for item in self._cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=self.scopes,
                                       query={"client_id": self.client_id}):
            if "ext_cache_key" in item or not item.get("secret"):
                continue
            expires_on = int(item.get("expires_on", 0))
            usable_until = min(expires_on - REFRESH_MARGIN_S, int(item.get("refresh_on", expires_on)))
            if usable_until > now:
                self._memo = (item["secret"], usable_until)
                self.shared_cache_hits += 1
                return str(item["secret"])
        return None

    def _refresh(self) -> str:
        """Fetch a token under the shared lock; whoever waits re-reads the cache the lock holder fills."""
        lock_value = secrets.token_hex(8)
        deadline = time.monotonic() + self.lock_wait_s
        locked = False
        while True:
            locked = self._try_lock(lock_value)
            if locked:
                break
            time.sleep(self.poll_s)
            self._load()
            cached = self._fresh_from_cache(time.time())
            if cached is not None:
                return cached
            if time.monotonic() > deadline:
                log.warning("token cache lock not released in time; requesting a token without it",
                            extra={"authority": self.authority, "client_id": self.client_id})
                break
        try:
            self._load()
            cached = self._fresh_from_cache(time.time())
            if cached is not None:
                return cached
            return self._acquire()
        finally:
            if locked and self.redis is not None:
                self._redis_call(lambda r: r.eval(_UNLOCK_LUA, 1, self.lock_key, lock_value))

    def _acquire(self) -> str:
        app = self._application()
        try:
            result = app.acquire_token_for_client(self.scopes)
        except requests.RequestException as exc:
            raise TokenError(f"token endpoint unreachable ({type(exc).__name__})", code="unreachable",
                             transient=True) from None
        except msal.exceptions.MsalServiceError as exc:  # msal raises this for 5xx answers ("HTTP Error: 503")
            raise _service_error(exc) from None
        if not isinstance(result, dict) or "access_token" not in result:
            result = result if isinstance(result, dict) else {}
            error = str(result.get("error") or "unknown_error")
            description = str(result.get("error_description") or "").splitlines()[0][:300] if result.get(
                "error_description") else ""
            raise TokenError(f"{error}: {description}" if description else error, code=error,
                             transient=error in TRANSIENT_ERRORS)
        if result.get("token_source") != "cache":
            self.token_requests += 1
        now = time.time()
        expires_in = float(result.get("expires_in") or 0)
        usable_until = now + expires_in - REFRESH_MARGIN_S
        if result.get("refresh_in"):
            usable_until = min(usable_until, now + float(result["refresh_in"]))
        token = str(result["access_token"])
        self._memo = (token, usable_until) if usable_until > now else None
        if self._cache.has_state_changed:
            self._save()
        return token

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            options: dict[str, Any] = {}
            if not is_microsoft_host(self.authority):
                options["instance_discovery"] = False
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._credential, authority=self.authority,
                    token_cache=self._cache, timeout=self.timeout, **options)
            except requests.RequestException as exc:
                raise TokenError(f"authority unreachable ({type(exc).__name__})", code="unreachable",
                                 transient=True) from None
            except msal.exceptions.MsalServiceError as exc:
                raise _service_error(exc) from None
            except ValueError as exc:
                # msal raises ValueError when the authority's OpenID configuration cannot be read (an outage or
                # an unknown tenant); the first line says which.
                raise TokenError(f"authority discovery failed: {str(exc).splitlines()[0][:200]}",
                                 code="discovery_failed", transient=True) from None
        return self._app

    # --- shared cache in Redis ---

    def _redis_call(self, operation: Any) -> Any:
        if self.redis is None:
            return None
        try:
            return operation(self.redis)
        except redis.RedisError as exc:
            if not self._redis_warned:
                self._redis_warned = True
                log.warning("token cache: Redis unavailable, using the in-process cache",
                            extra={"error": type(exc).__name__})
            return None

    def _try_lock(self, value: str) -> bool:
        if self.redis is None:
            return True
        result = self._redis_call(lambda r: r.set(self.lock_key, value, nx=True,
                                                  px=math.ceil(self.lock_ttl_s * 1000)))
        if result is None:  # NX lost (None) or Redis down (None, warned): decide by reachability
            return self._redis_call(lambda r: r.ping()) is None
        return bool(result)

    def _load(self) -> None:
        blob = self._redis_call(lambda r: r.get(self.cache_key))
        if blob is None or blob == self._loaded:
            return
        try:
            state = self._fernet.decrypt(blob).decode()
        except InvalidToken:
            # Written under another credential (a rotated secret): ignore it; the next token overwrites it.
            self._loaded = blob
            return
        self._cache.deserialize(state)
        self._loaded = blob

    def _save(self) -> None:
        blob = self._fernet.encrypt(self._cache.serialize().encode())
        if self._redis_call(lambda r: r.set(self.cache_key, blob, ex=CACHE_TTL_S)):
            self._loaded = blob


class StaticTokenProvider:
    """A fixed bearer token (local development against the emulators, tests of the Graph client alone)."""

    def __init__(self, token: str):
        self._token = token

    def token(self) -> str:
        return self._token

    def invalidate(self, token: str) -> None:
        return None
