"""Build botbuilder's per-turn clients once, not for every activity.

botbuilder 4.17.1's CloudAdapter creates a ConnectorClient and a UserTokenClient for every inbound activity. Each
builds msrest's retry configuration, whose retryable-status list is computed with an O(n²) list comprehension in
pure Python: about 5 ms per client, ~60% of the bot's CPU time per activity (profiled with py-spy under
`python -m bench --only endpoint`). This bot sends nothing through them (replies and card updates go through
services.teams; an invoke's answer is the HTTP response), and both depend only on the app id, the service URL and
the audience, so they are kept and reused, as botbuilder's own BotFrameworkAdapter does with its connector client
cache. The caches are bounded (validated tokens decide the keys, so they stay tiny in practice).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from botbuilder.schema import Activity
from botframework.connector.auth import (
    AuthenticateRequestResult,
    BotFrameworkAuthentication,
    ClaimsIdentity,
    ConnectorFactory,
    UserTokenClient,
)
from botframework.connector.auth.authentication_constants import AuthenticationConstants

MAX_CACHED = 64


def _app_id(identity: ClaimsIdentity | None) -> str:
    # As botbuilder's _BuiltinBotFrameworkAuthentication.get_app_id: the audience for channel tokens.
    if identity is None:
        return ""
    return str(identity.get_claim_value(AuthenticationConstants.AUDIENCE_CLAIM)
               or identity.get_claim_value(AuthenticationConstants.APP_ID_CLAIM) or "")


class Bounded(OrderedDict[Any, Any]):
    """A dict that forgets its oldest entries beyond `limit`."""

    def __init__(self, limit: int = MAX_CACHED):
        super().__init__()
        self.limit = limit

    def remember(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
        return value


class _ReusingConnectorFactory(ConnectorFactory):
    def __init__(self, inner: ConnectorFactory, app_id: str, cache: Bounded):
        self.inner = inner
        self.app_id = app_id
        self.cache = cache

    async def create(self, service_url: str, audience: str | None = None) -> Any:
        key = (self.app_id, service_url, audience)
        client = self.cache.get(key)
        if client is None:
            client = self.cache.remember(key, await self.inner.create(service_url, audience))
        return client


class ReusingAuthentication(BotFrameworkAuthentication):
    """Delegates everything to botbuilder's authentication; only the clients it builds are reused."""

    def __init__(self, inner: BotFrameworkAuthentication):
        self.inner = inner
        self._connectors = Bounded()
        self._user_token_clients = Bounded()

    def _wrap(self, result: AuthenticateRequestResult) -> AuthenticateRequestResult:
        if result.connector_factory is not None:
            result.connector_factory = _ReusingConnectorFactory(result.connector_factory,
                                                                _app_id(result.claims_identity), self._connectors)
        return result

    async def authenticate_request(self, activity: Activity, auth_header: str) -> AuthenticateRequestResult:
        return self._wrap(await self.inner.authenticate_request(activity, auth_header))

    async def authenticate_streaming_request(self, auth_header: str,
                                             channel_id_header: str) -> AuthenticateRequestResult:
        return self._wrap(await self.inner.authenticate_streaming_request(auth_header, channel_id_header))

    def create_connector_factory(self, claims_identity: ClaimsIdentity) -> ConnectorFactory:
        return _ReusingConnectorFactory(self.inner.create_connector_factory(claims_identity), _app_id(claims_identity),
                                        self._connectors)

    async def create_user_token_client(self, claims_identity: ClaimsIdentity) -> UserTokenClient:
        key = _app_id(claims_identity)
        client = self._user_token_clients.get(key)
        if client is None:
            client = self._user_token_clients.remember(key, await self.inner.create_user_token_client(claims_identity))
        return client

    def create_bot_framework_client(self) -> Any:
        return self.inner.create_bot_framework_client()

    def get_originating_audience(self) -> str:
        return self.inner.get_originating_audience()

    async def authenticate_channel_request(self, auth_header: str) -> ClaimsIdentity:
        return await self.inner.authenticate_channel_request(auth_header)

    async def generate_caller_id(self, *, credential_factory: Any, claims_identity: ClaimsIdentity,
                                 caller_id: str) -> str:
        return await self.inner.generate_caller_id(credential_factory=credential_factory,
                                                   claims_identity=claims_identity, caller_id=caller_id)
