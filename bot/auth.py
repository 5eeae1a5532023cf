"""Inbound Bot Framework authentication, configured from settings.

Production: SingleTenant app id/password/tenant; tokens validated by botbuilder against the Bot Framework OpenID
metadata. Development (BREAKGLASS_ENV=development, no MicrosoftAppId): botbuilder's auth-disabled mode, which
`serve` allows only on a loopback address. Tests may point the OpenID metadata at a local JWKS (PROTOCOL_NOTES §1).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import jwt
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botframework.connector.auth import (
    AuthenticateRequestResult,
    AuthenticationConfiguration,
    BotFrameworkAuthentication,
    JwtTokenExtractor,
)

from bot.clients import Bounded
from services.settings import Settings

CHANNEL_ISSUER = "https://api.botframework.com"
log = logging.getLogger(__name__)


def bot_configuration(settings: Settings) -> SimpleNamespace:
    if settings.auth_disabled:
        # Empty app id + MultiTenant + none of the TO_* keys: botbuilder's "emulator mode" accepts requests
        # without a token (and with a parameterized config it would 500 instead; see PROTOCOL_NOTES §1).
        return SimpleNamespace(APP_ID="", APP_PASSWORD="", APP_TYPE="MultiTenant")
    config = SimpleNamespace(APP_ID=settings.app_id, APP_PASSWORD=settings.app_password.get_secret_value(),
                             APP_TYPE=settings.app_type, APP_TENANTID=settings.app_tenant_id)
    if settings.bot_openid_metadata_url:
        config.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = settings.bot_openid_metadata_url
        config.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = CHANNEL_ISSUER
    return config


def build_authentication(settings: Settings) -> BotFrameworkAuthentication:
    return ConfigurationBotFrameworkAuthentication(
        bot_configuration(settings),
        auth_configuration=AuthenticationConfiguration(required_endorsements=["msteams"]),
    )


class SigningKeyRefresh:
    """Picks up a Bot Framework signing-key rollover without a restart.

    botbuilder 4.17.1 caches the channel's signing keys per OpenID metadata URL for 24 hours
    (`JwtTokenExtractor.metadataCache`), and because `_OpenIdMetadata._find` raises IndexError for an unknown key id,
    its own "refresh at most hourly when a key is missing" never runs: after a rollover every Teams request would
    get 401 for up to a day. When a rejected token names a key id that no cached key set contains, this marks those
    sets stale so the next validation fetches the keys again, and the caller retries once. At most once per
    MIN_INTERVAL_S per metadata URL, so a flood of made-up key ids cannot hammer the metadata endpoint."""

    MIN_INTERVAL_S = 60.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def unknown_key(self, authorization: str) -> bool:
        """True when the keys were marked stale for this token's key id (then validate it once more)."""
        scheme, _, token = authorization.partition(" ")
        try:
            kid = jwt.get_unverified_header(token).get("kid") if scheme == "Bearer" and token else None
        except jwt.PyJWTError:
            return False
        if not isinstance(kid, str) or not kid:
            return False
        now = time.monotonic()
        refreshed = False
        for url, metadata in list(JwtTokenExtractor.metadataCache.items()):
            keys = getattr(metadata, "keys", None) or []
            if any(isinstance(k, dict) and k.get("kid") == kid for k in keys):
                continue
            if now - self._last.get(url, -math.inf) < self.MIN_INTERVAL_S:
                continue
            self._last[url] = now
            metadata.last_updated = datetime.min  # botbuilder refreshes keys older than a day on the next use
            refreshed = True
            log.info("unknown signing key id; refreshing the OpenID keys", extra={"metadata_url": url})
        return refreshed


class ValidatedTokens:
    """Tokens botbuilder has accepted, remembered for at most REMEMBER_S and never past their `exp`.

    Teams sends the same channel token with every activity for up to an hour, and checking it again (signature,
    issuer, audience, lifetime, endorsement for the channel, the serviceurl claim) is about 0.6 ms of CPU per
    activity, a tenth of an approval's way to Graph. An entry is keyed by the SHA-256 of the whole Authorization
    header together with the activity's channel id and service URL, the two activity fields botbuilder checks the
    token against, so a token is only ever accepted again for the channel and service URL it was validated with.
    Only acceptances are remembered: every bad token is validated in full. After a signing-key rollover that
    withdraws a key, a token it signed can be accepted for at most REMEMBER_S more."""

    REMEMBER_S = 300.0
    MAX_ENTRIES = 1024

    def __init__(self, now: Callable[[], float] = time.time):
        self._now = now
        self._entries = Bounded(self.MAX_ENTRIES)

    @staticmethod
    def _key(header: str, channel_id: str | None, service_url: str | None) -> bytes:
        return hashlib.sha256("\n".join((header, channel_id or "", service_url or "")).encode()).digest()

    def get(self, header: str, channel_id: str | None, service_url: str | None) -> AuthenticateRequestResult | None:
        key = self._key(header, channel_id, service_url)
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, result = entry
        if self._now() >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        # A fresh result per turn: the adapter may set fields on it, and turns run concurrently.
        copy = AuthenticateRequestResult()
        copy.claims_identity, copy.audience = result.claims_identity, result.audience
        copy.caller_id, copy.connector_factory = result.caller_id, result.connector_factory
        return copy

    def remember(self, header: str, channel_id: str | None, service_url: str | None,
                 result: AuthenticateRequestResult) -> None:
        claims: dict[str, Any] = getattr(result.claims_identity, "claims", None) or {}
        try:
            expires = float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            return  # nothing says how long it is good for: validate it every time
        until = min(expires, self._now() + self.REMEMBER_S)
        if until <= self._now():
            return
        self._entries.remember(self._key(header, channel_id, service_url), (until, result))
