"""Bot Framework channel auth: the OpenID metadata + JWKS the bot validates inbound Teams tokens against,
and ``ChannelTokenMinter`` to create those tokens (and every broken variant a test needs).

Point the product at it with ``TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL=<url>/v1/.well-known/openidconfiguration``
and ``TO_BOT_FROM_CHANNEL_TOKEN_ISSUER=https://api.botframework.com`` (PROTOCOL_NOTES §1). botbuilder caches the
JWKS per metadata URL for 24 h (refreshing at most hourly on an unknown kid), so a rollover test must either add
the new key before the bot first fetches keys or clear ``JwtTokenExtractor.metadataCache``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .base import Emulator
from .clock import Clock, NowFn
from .fixture_files import load_fixture
from .responses import json_response, origin, read_json

CHANNEL_ISSUER = "https://api.botframework.com"
DEMO_BOT_APP_ID = "bbbbbbbb-0000-0000-0000-000000000001"
METADATA_PATH = "/v1/.well-known/openidconfiguration"
KEYS_PATH = "/v1/.well-known/keys"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    endorsements: list[str]
    certificate_der: bytes = b""

    @classmethod
    def generate(cls, endorsements: list[str], kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = kid or base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.botframework.com (emulator)")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return cls(kid, key, list(endorsements), cert.public_bytes(serialization.Encoding.DER))

    def jwk(self) -> dict[str, Any]:
        """The JWKS entry in the shape of jwks_login_botframework_shape.json (kid == x5t, endorsements)."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e),
            "x5c": [base64.b64encode(self.certificate_der).decode()],
            "endorsements": list(self.endorsements),
        }

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class TokenVariant(StrEnum):
    VALID = "valid"
    WRONG_AUD = "wrong_aud"
    WRONG_ISS = "wrong_iss"
    EXPIRED = "expired"
    UNKNOWN_KID = "unknown_kid"
    NOT_ENDORSED = "not_endorsed"
    SERVICEURL_MISMATCH = "serviceurl_mismatch"
    GARBAGE = "garbage"


class BotAuthEmulator(Emulator):
    name = "botauth"

    def __init__(
        self,
        *,
        app_id: str = DEMO_BOT_APP_ID,
        endorsements: tuple[str, ...] = ("msteams",),
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        self.app_id = app_id
        # RSA generation is slow-ish, so keys are made once and survive reset(); reset only undoes rotation.
        self._initial_keys = [
            SigningKey.generate([*endorsements, "webchat", "directline"]),
            SigningKey.generate(["webchat"]),  # published but not endorsed for msteams
        ]
        self._stray_key = SigningKey.generate(["msteams"])  # never published: "unknown kid"
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.keys: list[SigningKey] = list(self._initial_keys)
        self.active_kid = self._initial_keys[0].kid
        self.unendorsed_kid = self._initial_keys[1].kid
        self.jwks_request_count = 0

    def _snapshot(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "active_kid": self.active_kid,
            "keys": [{"kid": k.kid, "endorsements": k.endorsements} for k in self.keys],
            "jwks_request_count": self.jwks_request_count,
        }

    # ----- Python API ------------------------------------------------------------------------------------
    def add_key(self, endorsements: tuple[str, ...] | list[str] = ("msteams",), *, activate: bool = True) -> str:
        """Key rollover: publish a new key (and sign with it from now on when ``activate``)."""
        key = SigningKey.generate(list(endorsements))
        with self.lock:
            self.keys.append(key)
            if activate:
                self.active_kid = key.kid
        return key.kid

    def retire_key(self, kid: str) -> None:
        with self.lock:
            self.keys = [k for k in self.keys if k.kid != kid]

    def key(self, kid: str) -> SigningKey:
        with self.lock:
            if kid == self._stray_key.kid:
                return self._stray_key
            return next(k for k in self.keys if k.kid == kid)

    def jwks(self) -> dict[str, Any]:
        with self.lock:
            return {"keys": [k.jwk() for k in self.keys]}

    def minter(self, app_id: str | None = None) -> ChannelTokenMinter:
        return ChannelTokenMinter(self, app_id=app_id)

    # ----- routes ----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(METADATA_PATH, self._h_metadata)
        app.router.add_get("/v1/.well-known/openid-configuration", self._h_metadata)
        app.router.add_get(KEYS_PATH, self._h_keys)
        # Control extras (under /_emulator/, so not logged): mint tokens / roll keys from another process.
        app.router.add_post("/_emulator/mint", self._h_mint)
        app.router.add_post("/_emulator/keys", self._h_add_key)

    async def _h_metadata(self, request: web.Request) -> web.Response:
        body = load_fixture("botframework/openid_configuration_login_botframework.json")
        body["jwks_uri"] = f"{origin(request)}{KEYS_PATH}"
        return json_response(body)

    async def _h_keys(self, request: web.Request) -> web.Response:
        with self.lock:
            self.jwks_request_count += 1
        return json_response(self.jwks())

    async def _h_mint(self, request: web.Request) -> web.Response:
        try:
            data = await read_json(request)
            variant = TokenVariant(data.get("variant", "valid"))
            token = self.minter(data.get("app_id")).mint(
                data["service_url"], variant=variant, lifetime_s=int(data.get("lifetime_s", 3600))
            )
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return json_response({"token": token, "authorization": f"Bearer {token}"})

    async def _h_add_key(self, request: web.Request) -> web.Response:
        try:
            data = await read_json(request)
        except ValueError:
            data = {}
        kid = self.add_key(tuple(data.get("endorsements", ["msteams"])), activate=bool(data.get("activate", True)))
        return json_response({"kid": kid, **self._snapshot()}, status=201)


@dataclass
class ChannelTokenMinter:
    """RS256 channel tokens as Teams sends them: iss, aud=<bot app id>, serviceurl, nbf, exp; header kid."""

    auth: BotAuthEmulator
    app_id: str | None = None
    extra_claims: dict[str, Any] = field(default_factory=dict)

    def mint(
        self,
        service_url: str,
        *,
        variant: TokenVariant | str = TokenVariant.VALID,
        lifetime_s: int = 3600,
        now: float | None = None,
    ) -> str:
        variant = TokenVariant(variant)
        if variant is TokenVariant.GARBAGE:
            return "not-a-jwt.garbage." + hashlib.sha256(service_url.encode()).hexdigest()[:16]
        issued = int(time.time() if now is None else now)  # botbuilder validates against real time
        claims: dict[str, Any] = {
            "serviceurl": service_url,
            "nbf": issued - 5,
            "exp": issued + lifetime_s,
            "iss": CHANNEL_ISSUER,
            "aud": self.app_id or self.auth.app_id,
            **copy.deepcopy(self.extra_claims),
        }
        kid = self.auth.active_kid
        if variant is TokenVariant.WRONG_AUD:
            claims["aud"] = "ffffffff-0000-0000-0000-00000000dead"
        elif variant is TokenVariant.WRONG_ISS:
            claims["iss"] = "https://sts.evil.example"
        elif variant is TokenVariant.EXPIRED:
            claims["nbf"], claims["exp"] = issued - 7200, issued - 3600  # well past the 5 min leeway
        elif variant is TokenVariant.SERVICEURL_MISMATCH:
            claims["serviceurl"] = service_url.rstrip("/") + "/mismatch/"
        elif variant is TokenVariant.UNKNOWN_KID:
            kid = self.auth._stray_key.kid
        elif variant is TokenVariant.NOT_ENDORSED:
            kid = self.auth.unendorsed_kid
        key = self.auth.key(kid)
        return jwt.encode(claims, key.private_key, algorithm="RS256",
                          headers={"typ": "JWT", "kid": kid, "x5t": kid})

    def authorization(self, service_url: str, variant: TokenVariant | str = TokenVariant.VALID) -> str:
        """The full ``Authorization`` header value."""
        return f"Bearer {self.mint(service_url, variant=variant)}"
