"""Entra ID (login.microsoftonline.com) v2 endpoint: OpenID discovery and client-credentials tokens.

HTTPS only in practice: msal canonicalises the authority and the discovered token endpoint and rejects http
(PROTOCOL_NOTES §4), so ``start()`` always serves TLS from a ``LocalCA``. Supports what msal 1.39 sends for
``acquire_token_for_client``: ``client_secret`` in the form, or a ``client_assertion`` JWT (RS256 + ``x5t`` when
given a SHA-1 thumbprint, PS256 + ``x5t#S256`` when given the public certificate).
"""

from __future__ import annotations

import json
import ssl
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509

from .base import Emulator
from .clock import Clock, NowFn
from .fixture_files import load_fixture
from .responses import json_response, origin
from .tls import LocalCA, certificate_thumbprints, write_combined_bundle
from .tokens import DEFAULT_SIGNING_SECRET, GRAPH_AUDIENCE, mint_access_token

DEMO_TENANT_ID = "aaaaaaaa-0000-0000-0000-000000000001"
DEMO_GRAPH_CLIENT_ID = "dddddddd-0000-0000-0000-000000000001"
DEMO_GRAPH_CLIENT_SECRET = "breakglass-demo-graph-secret"
DEFAULT_APP_ROLES = (
    "RoleAssignmentSchedule.ReadWrite.Directory",
    "RoleManagement.ReadWrite.Directory",
    "User.Read.All",
    "GroupMember.Read.All",
    # Teams proactive installation (PROTOCOL_NOTES §9.1): the any-app variant, since the demo's Graph app is not
    # the bot app named in the manifest's webApplicationInfo.id.
    "AppCatalog.Read.All",
    "TeamsAppInstallation.ReadWriteForUser.All",
    # Ending sessions, the audit logs, the emergency-account watch and the risk facts (PROTOCOL_NOTES §8.1-8.3, 8.5).
    "User.RevokeSessions.All",
    "AuditLog.Read.All",
    "Directory.Read.All",
    "IdentityRiskyUser.Read.All",
    # Group entitlements: PIM for Groups (assign/remove and read back), whether a group is onboarded, and direct
    # membership/ownership without P2 (PROTOCOL_NOTES §8.4).
    "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup",
    "RoleManagementPolicy.Read.AzureADGroup",
    "GroupMember.ReadWrite.All",
)
GRAPH_DEFAULT_SCOPE = f"{GRAPH_AUDIENCE}/.default"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_FIXTURE_AUTHORITY = "https://login.microsoftonline.com/aaaaaaaa-0000-0000-0000-000000000001"
_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass
class ClientApp:
    """An app registration: a secret and/or uploaded certificates, and the app roles consented to it."""

    client_id: str
    secret: str | None = None
    certificate_pems: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=lambda: list(DEFAULT_APP_ROLES))

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "has_secret": self.secret is not None,
            "certificate_thumbprints": [certificate_thumbprints(p)[0] for p in self.certificate_pems],
            "roles": self.roles,
        }


class EntraError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description


class EntraEmulator(Emulator):
    name = "entra"

    def __init__(
        self,
        *,
        tenant_id: str = DEMO_TENANT_ID,
        tenant_domains: tuple[str, ...] = ("contoso.example",),
        client_id: str | None = DEMO_GRAPH_CLIENT_ID,
        client_secret: str | None = DEMO_GRAPH_CLIENT_SECRET,
        client_certificate_pem: str | None = None,
        roles: tuple[str, ...] | list[str] = DEFAULT_APP_ROLES,
        signing_secret: str = DEFAULT_SIGNING_SECRET,
        expires_in: int = 3599,
        scopes: dict[str, str] | None = None,
        ca: LocalCA | None = None,
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        self.tenant_id = tenant_id
        self.tenant_domains = tuple(d.lower() for d in tenant_domains)
        self.signing_secret = signing_secret
        self._default_expires_in = expires_in
        self.scopes = scopes or {GRAPH_DEFAULT_SCOPE: GRAPH_AUDIENCE}  # scope -> audience of issued token
        self._configured_clients: dict[str, ClientApp] = {}
        if client_id:
            self._configured_clients[client_id] = ClientApp(
                client_id,
                secret=client_secret,
                certificate_pems=[client_certificate_pem] if client_certificate_pem else [],
                roles=list(roles),
            )
        self._ca = ca
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.clients = {
            cid: ClientApp(c.client_id, c.secret, list(c.certificate_pems), list(c.roles))
            for cid, c in self._configured_clients.items()
        }
        self.expires_in = self._default_expires_in
        self.token_request_count = 0
        self.discovery_request_count = 0
        self.issued: list[dict[str, Any]] = []

    def _snapshot(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "clients": [c.to_json() for c in self.clients.values()],
            "expires_in": self.expires_in,
            "token_request_count": self.token_request_count,
            "tokens_issued": len(self.issued),
            "discovery_request_count": self.discovery_request_count,
            "issued": list(self.issued),
        }

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        if "expires_in" in data:
            self.expires_in = int(data.pop("expires_in"))
        if "clients" in data:
            self.clients = {}
            for item in data.pop("clients"):
                self.register_client(
                    item["client_id"],
                    secret=item.get("secret"),
                    certificate_pem=item.get("certificate_pem"),
                    roles=item.get("roles"),
                )
        super()._apply_state(data)

    # ----- Python API ------------------------------------------------------------------------------------
    @property
    def ca(self) -> LocalCA:
        if self._ca is None:
            self._ca = LocalCA()
        return self._ca

    def ssl_context(self) -> ssl.SSLContext:
        return self.ca.server_ssl_context()

    def write_ca_pem(self, path: str) -> str:
        return str(self.ca.write_ca_pem(path))

    def write_ca_bundle(self, path: str) -> str:
        """System roots + this emulator's CA; point REQUESTS_CA_BUNDLE at the returned path."""
        return str(write_combined_bundle(path, [self.ca.ca_pem]))

    def register_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate_pem: str | None = None,
        roles: list[str] | tuple[str, ...] | None = None,
    ) -> ClientApp:
        with self.lock:
            app = ClientApp(
                client_id,
                secret=secret,
                certificate_pems=[certificate_pem] if certificate_pem else [],
                roles=list(DEFAULT_APP_ROLES if roles is None else roles),
            )
            self.clients[client_id] = app
            return app

    def mint_token(
        self, *, client_id: str | None = None, roles: list[str] | None = None, lifetime_s: int = 3599
    ) -> str:
        """A Graph token exactly like the token endpoint would issue, without an HTTP round trip."""
        cid = client_id or next(iter(self.clients), DEMO_GRAPH_CLIENT_ID)
        app_roles = roles if roles is not None else (self.clients[cid].roles if cid in self.clients else [])
        return mint_access_token(
            secret=self.signing_secret, tenant_id=self.tenant_id, app_id=cid, roles=app_roles,
            lifetime_s=lifetime_s,
        )

    # ----- HTTP ------------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/common/discovery/instance", self._h_instance_discovery)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._h_openid_configuration)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self._h_keys)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._h_token)

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        headers = {"Content-Type": _CONTENT_TYPE}
        if status == 429:
            headers["Retry-After"] = "1"
        error = EntraError(
            status, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again."
        )
        return headers, self._error_body(error, request)

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() == self.tenant_id or tenant.lower() in self.tenant_domains

    async def _h_instance_discovery(self, request: web.Request) -> web.Response:
        body = load_fixture("entra/instance_discovery_response.json")
        tenant = self.tenant_id
        authorization_endpoint = request.query.get("authorization_endpoint", "")
        segments = [s for s in authorization_endpoint.split("/") if s]
        if len(segments) >= 3:
            tenant = segments[2]
        body["tenant_discovery_endpoint"] = f"{origin(request)}/{tenant}/v2.0/.well-known/openid-configuration"
        return json_response(body, content_type=_CONTENT_TYPE)

    async def _h_openid_configuration(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        with self.lock:
            self.discovery_request_count += 1
        if not self._known_tenant(tenant):
            return self._error_response(self._tenant_not_found(tenant), request)
        # Rewrite the recorded document so every https URL points back at this emulator.
        text = (
            _fixture_text("entra/openid_configuration_tenant_v2.json")
            .replace(_FIXTURE_AUTHORITY, f"{origin(request)}/{tenant}")
        )
        return web.Response(text=text, headers={"Content-Type": _CONTENT_TYPE})

    async def _h_keys(self, request: web.Request) -> web.Response:
        # Issued tokens are HS256 (shared with the Graph emulator), so there is no public key to publish.
        return json_response({"keys": []}, content_type=_CONTENT_TYPE)

    async def _h_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        with self.lock:
            self.token_request_count += 1
        try:
            client, audience, method = self._authenticate(request, fields)
        except EntraError as exc:
            return self._error_response(exc, request)
        with self.lock:
            lifetime = self.expires_in
            token = mint_access_token(
                secret=self.signing_secret, tenant_id=self.tenant_id, app_id=client.client_id,
                roles=client.roles, audience=audience, lifetime_s=lifetime,
            )
            self.issued.append({
                "client_id": client.client_id, "auth": method, "audience": audience,
                "expires_in": lifetime, "at": self.clock.now(),
            })
        body = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}
        return json_response(body, headers=_NO_STORE, content_type=_CONTENT_TYPE)

    def _authenticate(self, request: web.Request, form: dict[str, str]) -> tuple[ClientApp, str, str]:
        tenant = request.match_info["tenant"]
        if not self._known_tenant(tenant):
            raise self._tenant_not_found(tenant)
        if form.get("grant_type") != "client_credentials":
            raise EntraError(
                400, "unsupported_grant_type", 70003,
                f"The app requested an unsupported grant type '{form.get('grant_type', '')}'.",
            )
        client_id = form.get("client_id")
        if not client_id:
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_id'.")
        with self.lock:
            client = self.clients.get(client_id)
        if client is None:
            raise EntraError(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                "This can happen if the application has not been installed by the administrator of the tenant "
                "or consented to by any user in the tenant.",
            )
        if "client_assertion" in form:
            self._check_assertion(request, client, form)
            method = "certificate"
        elif "client_secret" in form:
            if client.secret is None or form["client_secret"] != client.secret:
                raise EntraError(
                    401, "invalid_client", 7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                    f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                )
            method = "secret"
        else:
            raise EntraError(401, "invalid_client", 7000218,
                             "The request body must contain the following parameter: 'client_assertion' or "
                             "'client_secret'.")
        return client, self._audience_for(form.get("scope")), method

    def _audience_for(self, scope: str | None) -> str:
        if not scope:
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'scope'.")
        requested = scope.split()
        if len(requested) == 1 and requested[0] in self.scopes:
            return self.scopes[requested[0]]
        if not all(s.endswith("/.default") for s in requested):
            raise EntraError(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        raise EntraError(
            400, "invalid_scope", 70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
        )

    def _check_assertion(self, request: web.Request, client: ClientApp, form: dict[str, str]) -> None:
        if form.get("client_assertion_type") != JWT_BEARER:
            raise EntraError(400, "invalid_request", 70002,
                             "The client_assertion_type must be "
                             "'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.")
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from exc
        algorithm = header.get("alg")
        if algorithm not in ("RS256", "PS256"):
            raise EntraError(401, "invalid_client", 5002738,
                             f"Invalid JWT token. '{algorithm}' is not a supported signature algorithm.")
        # msal sends the thumbprint base64url *with* "=" padding (RFC 7515 says without); Entra takes both.
        thumb = str(header.get("x5t#S256") or header.get("x5t") or "").rstrip("=")
        certificate = next(
            (pem for pem in client.certificate_pems if thumb and thumb in certificate_thumbprints(pem)), None
        )
        if certificate is None:
            raise EntraError(
                401, "invalid_client", 700027,
                "The certificate with identifier used to sign the client assertion is not registered on "
                f"application. [Reason - The key was not found., Thumbprint of key used by client: '{thumb}']",
            )
        public_key = x509.load_pem_x509_certificate(certificate.encode()).public_key()
        token_endpoint = f"{origin(request)}{request.path}"
        try:
            claims = jwt.decode(
                assertion, public_key, algorithms=[algorithm], audience=token_endpoint,  # type: ignore[arg-type]
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise EntraError(401, "invalid_client", 700024,
                             "Client assertion is not within its valid time range.") from exc
        except jwt.InvalidAudienceError as exc:
            raise EntraError(401, "invalid_client", 700212,
                             f"Client assertion audience claim does not match the token endpoint "
                             f"'{token_endpoint}'.") from exc
        except jwt.InvalidSignatureError as exc:
            raise EntraError(401, "invalid_client", 700027,
                             "Client assertion failed signature validation.") from exc
        except jwt.PyJWTError as exc:
            raise EntraError(400, "invalid_request", 50027, f"JWT token is invalid or malformed. {exc}") from exc
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise EntraError(401, "invalid_client", 700021,
                             "Client assertion application identifier doesn't match 'client_id' parameter.")

    def _tenant_not_found(self, tenant: str) -> EntraError:
        return EntraError(
            400, "invalid_tenant", 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud.",
        )

    def _error_body(self, error: EntraError, request: web.Request) -> dict[str, Any]:
        """The fixture envelope: error, error_description with trace lines, error_codes, ids, timestamp."""
        trace_id = str(uuid.uuid4())
        correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        timestamp = self.clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
        description = (
            f"AADSTS{error.code}: {error.description}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        )
        return {
            "error": error.error,
            "error_description": description,
            "error_codes": [error.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{origin(request)}/error?code={error.code}",
        }

    def _error_response(self, error: EntraError, request: web.Request) -> web.Response:
        return json_response(self._error_body(error, request), status=error.status, headers=_NO_STORE,
                             content_type=_CONTENT_TYPE)


_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _fixture_text(relative: str) -> str:
    return json.dumps(load_fixture(relative), indent=1)
