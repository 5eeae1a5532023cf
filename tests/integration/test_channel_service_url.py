"""A configured approvals channel is reached at the service URL Teams last gave for the tenant (every authenticated
activity carries it: the Playground's, or the tenant's region), not only at the configured default."""

from __future__ import annotations

from services.state.teams_users import TeamsUser
from tests.harness import TENANT, start_product


def test_the_configured_channel_uses_the_tenants_latest_service_url(tmp_path, redis_client, redis_url):
    product = start_product(tmp_path, redis_client, redis_url)
    try:
        notifier = product.services.notifier
        assert notifier.channel("approvals").service_url == product.settings.teams_service_url
        notifier.users.remember(TeamsUser(object_id="cccccccc-0000-0000-0000-000000000002", teams_id="29:dana",
                                          service_url="https://smba.trafficmanager.net/amer/", tenant_id=TENANT))
        channel = notifier.channel("approvals")
        assert channel.channel_id == product.settings.teams_approvals_channel_id
        assert channel.service_url == "https://smba.trafficmanager.net/amer/"
        # Another tenant's sighting changes nothing for ours.
        notifier.users.remember(TeamsUser(object_id="cccccccc-0000-0000-0000-000000000009", teams_id="29:x",
                                          service_url="https://elsewhere.example/", tenant_id="other-tenant"))
        assert notifier.channel("approvals").service_url == "https://smba.trafficmanager.net/amer/"
    finally:
        product.stop()
