"""Entra token endpoint: discovery document, client-credentials tokens and the error envelope."""

from __future__ import annotations

import jwt

from services.emulators.entra import DEMO_GRAPH_CLIENT_ID, DEMO_GRAPH_CLIENT_SECRET, DEMO_TENANT_ID
from services.emulators.fixture_files import load_fixture, response_of

from .conftest import Served, same_keys

TOKEN_PATH = f"/{DEMO_TENANT_ID}/oauth2/v2.0/token"
MSAL_FORM = load_fixture("entra/token_request_client_credentials.json")["msal_python_1_39_observed_request"]


def _form(**overrides: str) -> dict[str, str]:
    return {**MSAL_FORM["form"], "client_secret": DEMO_GRAPH_CLIENT_SECRET, **overrides}


def test_discovery_document_has_the_fixture_shape_with_https_urls_to_itself(entra: Served) -> None:
    response = entra.get(f"/{DEMO_TENANT_ID}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    body = response.json()
    same_keys(body, load_fixture("entra/openid_configuration_tenant_v2.json"))
    assert body["token_endpoint"] == f"{entra.url}{TOKEN_PATH}"
    assert body["authorization_endpoint"].startswith(entra.url + "/")
    assert body["issuer"] == f"{entra.url}/{DEMO_TENANT_ID}/v2.0"
    assert entra.url.startswith("https://")


def test_discovery_for_an_unknown_tenant_is_invalid_tenant(entra: Served) -> None:
    response = entra.get("/99999999-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_tenant"
    assert response.json()["error_codes"] == [90002]


def test_client_secret_token_has_the_documented_shape_and_graph_claims(entra: Served) -> None:
    response = entra.post(TOKEN_PATH, data=_form(), headers={"client-request-id": "req-1"})
    assert response.status_code == 200
    body = response.json()
    same_keys(body, load_fixture("entra/token_response_recorded_shape.json"))
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["iss"] == f"https://sts.windows.net/{DEMO_TENANT_ID}/"
    assert claims["tid"] == DEMO_TENANT_ID
    assert claims["appid"] == DEMO_GRAPH_CLIENT_ID
    assert "RoleAssignmentSchedule.ReadWrite.Directory" in claims["roles"]
    assert claims["exp"] - claims["iat"] == 3599 and claims["nbf"] == claims["iat"]
    assert entra.emulator.token_request_count == 1


def test_expires_in_and_roles_are_configurable(entra: Served) -> None:
    entra.emulator.set_state({"expires_in": 120, "clients": [
        {"client_id": DEMO_GRAPH_CLIENT_ID, "secret": "s2", "roles": ["User.Read.All"]}]})
    body = entra.post(TOKEN_PATH, data=_form(client_secret="s2")).json()
    assert body["expires_in"] == 120
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["roles"] == ["User.Read.All"]


def test_wrong_secret_is_401_invalid_client_in_the_fixture_envelope(entra: Served) -> None:
    response = entra.post(TOKEN_PATH, data=_form(client_secret="nope"), headers={"client-request-id": "corr-9"})
    assert response.status_code == 401
    body = response.json()
    _, _, fixture = response_of("entra/token_error_400_invalid_scope.http.json")
    assert set(fixture) <= set(body)
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert body["correlation_id"] == "corr-9"
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert "\r\nTrace ID: " in body["error_description"]
    assert entra.emulator.token_request_count == 1  # failures count too


def test_invalid_scope_matches_the_fixture(entra: Served) -> None:
    response = entra.post(TOKEN_PATH, data=_form(scope="https://foo.microsoft.com/.default"))
    status, _, fixture = response_of("entra/token_error_400_invalid_scope.http.json")
    assert response.status_code == status
    assert response.json()["error"] == fixture["error"]
    assert response.json()["error_codes"] == fixture["error_codes"]
    assert "The scope https://foo.microsoft.com/.default is not valid." in response.json()["error_description"]


def test_client_credentials_errors(entra: Served) -> None:
    unknown = entra.post(TOKEN_PATH, data=_form(client_id="00000000-0000-0000-0000-00000000abcd"))
    assert (unknown.status_code, unknown.json()["error"]) == (400, "unauthorized_client")
    wrong_grant = entra.post(TOKEN_PATH, data=_form(grant_type="password"))
    assert (wrong_grant.status_code, wrong_grant.json()["error"]) == (400, "unsupported_grant_type")
    no_credential = entra.post(TOKEN_PATH, data={k: v for k, v in _form().items() if k != "client_secret"})
    assert (no_credential.status_code, no_credential.json()["error"]) == (401, "invalid_client")
    not_default = entra.post(TOKEN_PATH, data=_form(scope="User.Read"))
    assert (not_default.status_code, not_default.json()["error_codes"]) == (400, [1002012])


def test_instance_discovery_is_served_from_the_fixture(entra: Served) -> None:
    response = entra.get("/common/discovery/instance", params={
        "api-version": "1.1", "authorization_endpoint": f"https://x/{DEMO_TENANT_ID}/oauth2/v2.0/authorize"})
    body = response.json()
    assert body["metadata"] == load_fixture("entra/instance_discovery_response.json")["metadata"]
    assert body["tenant_discovery_endpoint"] == (
        f"{entra.url}/{DEMO_TENANT_ID}/v2.0/.well-known/openid-configuration")
