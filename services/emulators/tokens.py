"""HS256 access tokens shared by the Entra (issuer) and Graph (validator) emulators.

Real Entra signs RS256 with rotating keys; a shared HMAC secret keeps the emulators simple while still making
Graph reject forged, expired, wrong-audience or wrong-tenant tokens. Token times use the *real* wall clock,
not an emulator ``Clock``: msal caches tokens by real time, so advancing a Graph clock to expire PIM windows
must not also invalidate the product's cached token.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_AUDIENCES = (GRAPH_AUDIENCE, "00000003-0000-0000-c000-000000000000")
DEFAULT_SIGNING_SECRET = "breakglass-emulator-shared-signing-secret"


def sts_issuer(tenant_id: str) -> str:
    return f"https://sts.windows.net/{tenant_id}/"


def mint_access_token(
    *,
    secret: str,
    tenant_id: str,
    app_id: str,
    roles: Sequence[str] = (),
    audience: str = GRAPH_AUDIENCE,
    lifetime_s: int = 3599,
    now: float | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": sts_issuer(tenant_id),
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_s,
        "tid": tenant_id,
        "appid": app_id,
        "appidacr": "1",
        "idtyp": "app",
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{tenant_id}:{app_id}")),
        "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{tenant_id}:{app_id}")),
        "roles": list(roles),
        "ver": "1.0",
        "uti": uuid.uuid4().hex[:22],
    }
    claims.update(extra_claims or {})
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})


class TokenProblem(Exception):
    """Why a bearer token was rejected; ``message`` mirrors Graph's InvalidAuthenticationToken texts."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def verify_access_token(
    token: str, *, secret: str, tenant_id: str, audiences: Sequence[str] = GRAPH_AUDIENCES
) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenProblem("IDX14100: JWT is not well formed, there are no dots (.).") from exc
    if header.get("alg") != "HS256":
        raise TokenProblem("Access token validation failure. Invalid signing algorithm.")
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], audience=list(audiences), leeway=0,
            options={"require": ["exp", "nbf", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenProblem("Lifetime validation failed, the token is expired.") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenProblem("Access token validation failure. Invalid audience.") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenProblem("Access token validation failure. Invalid signature.") from exc
    except jwt.PyJWTError as exc:
        raise TokenProblem(f"Access token validation failure. {exc}") from exc
    if claims.get("tid") != tenant_id or claims.get("iss") != sts_issuer(tenant_id):
        raise TokenProblem("Access token validation failure. Invalid issuer or tenant.")
    return claims
