"""Inbound Bot Framework authentication, configured from settings.

Production: SingleTenant app id/password/tenant; tokens validated by botbuilder against the Bot Framework OpenID
metadata. Development (BREAKGLASS_ENV=development, no MicrosoftAppId): botbuilder's auth-disabled mode, which
`serve` allows only on a loopback address. Tests may point the OpenID metadata at a local JWKS (PROTOCOL_NOTES §1).
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from types import SimpleNamespace

import jwt
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botframework.connector.auth import AuthenticationConfiguration, BotFrameworkAuthentication, JwtTokenExtractor

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
