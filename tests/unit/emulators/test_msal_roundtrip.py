"""Real msal against the HTTPS Entra emulator, and the issued token against the Graph emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msal
import pytest
import requests

from services.emulators import EntraEmulator, GraphEmulator, LocalCA, demo_seed, make_client_certificate
from services.emulators.entra import DEMO_GRAPH_CLIENT_ID, DEMO_GRAPH_CLIENT_SECRET, DEMO_TENANT_ID

from .conftest import Served

SCOPES = ["https://graph.microsoft.com/.default"]


@pytest.fixture
def stack(
    serve: Callable[..., Served], local_ca: LocalCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Served, Served]:
    entra_emulator = EntraEmulator(ca=local_ca, signing_secret="shared-secret-for-this-test-0123456789")
    graph_emulator = GraphEmulator(signing_secret="shared-secret-for-this-test-0123456789")
    graph_emulator.seed(demo_seed()["graph"])
    entra = serve(entra_emulator)
    graph = serve(graph_emulator)
    # msal's verify= is overridden by REQUESTS_CA_BUNDLE, so trust the CA the way the product's tests will.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", entra_emulator.write_ca_bundle(str(tmp_path / "bundle.pem")))
    return entra, graph


def _app(entra: Served, credential: object) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        DEMO_GRAPH_CLIENT_ID,
        client_credential=credential,
        authority=f"{entra.url}/{DEMO_TENANT_ID}",
        instance_discovery=False,
    )


def test_real_msal_gets_a_token_that_graph_accepts_and_caches_it(stack: tuple[Served, Served]) -> None:
    entra, graph = stack
    app = _app(entra, DEMO_GRAPH_CLIENT_SECRET)

    result = app.acquire_token_for_client(SCOPES)
    assert "access_token" in result, result
    assert result["token_source"] == "identity_provider"
    again = app.acquire_token_for_client(SCOPES)
    assert again["token_source"] == "cache"
    assert entra.emulator.token_request_count == 1

    [token_call] = entra.emulator.calls.list(path="/oauth2/v2.0/token")
    assert token_call.headers["x-client-sku"] == "MSAL.Python"
    assert token_call.body["client_info"] == "1"

    response = requests.get(
        f"{graph.url}/v1.0/users/riley@contoso.example",
        params={"$select": "id,displayName,userPrincipalName,accountEnabled"},
        headers={"Authorization": f"Bearer {result['access_token']}"},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["id"] == "cccccccc-0000-0000-0000-000000000001"


@pytest.mark.parametrize("use_thumbprint", [True, False], ids=["x5t-RS256", "x5t#S256-PS256"])
def test_real_msal_certificate_credential_is_verified(stack: tuple[Served, Served], use_thumbprint: bool) -> None:
    entra, graph = stack
    cert = make_client_certificate()
    entra.emulator.register_client(DEMO_GRAPH_CLIENT_ID, certificate_pem=cert.certificate_pem)
    credential = (
        {"private_key": cert.private_key_pem, "thumbprint": cert.sha1_thumbprint_hex}
        if use_thumbprint
        else {"private_key": cert.private_key_pem, "public_certificate": cert.certificate_pem}
    )
    result = _app(entra, credential).acquire_token_for_client(SCOPES)
    assert "access_token" in result, result
    assert entra.emulator.issued[-1]["auth"] == "certificate"
    response = requests.get(f"{graph.url}/v1.0/roleManagement/directory/roleDefinitions",
                            headers={"Authorization": f"Bearer {result['access_token']}"}, timeout=5)
    assert len(response.json()["value"]) == 5


def test_real_msal_with_an_unregistered_certificate_gets_invalid_client(stack: tuple[Served, Served]) -> None:
    entra, _ = stack
    registered, other = make_client_certificate(), make_client_certificate()
    entra.emulator.register_client(DEMO_GRAPH_CLIENT_ID, certificate_pem=registered.certificate_pem)
    result = _app(entra, {"private_key": other.private_key_pem, "thumbprint": other.sha1_thumbprint_hex}
                  ).acquire_token_for_client(SCOPES)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]


def test_short_token_lifetime_makes_msal_ask_every_time(stack: tuple[Served, Served]) -> None:
    entra, _ = stack
    entra.emulator.set_state({"expires_in": 240})  # < 300 s counts as expired in msal's cache
    app = _app(entra, DEMO_GRAPH_CLIENT_SECRET)
    app.acquire_token_for_client(SCOPES)
    app.acquire_token_for_client(SCOPES)
    assert entra.emulator.token_request_count == 2
