"""Bot Framework channel auth: metadata/JWKS shapes, and minted tokens judged by botbuilder's real validator."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
import requests
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity
from botframework.connector.auth import JwtTokenExtractor

from services.emulators import BotAuthEmulator, RunningEmulator, TokenVariant
from services.emulators.botauth import DEMO_BOT_APP_ID, METADATA_PATH
from services.emulators.fixture_files import load_fixture

SERVICE_URL = "https://smba.trafficmanager.net/emea/"


@pytest.fixture(scope="module")
def running_auth() -> Iterator[RunningEmulator]:
    # RSA key generation is the slow part, so one emulator serves the module and is reset per test.
    with BotAuthEmulator().start() as running:
        yield running


@pytest.fixture
def auth(running_auth: RunningEmulator) -> BotAuthEmulator:
    emulator = running_auth.emulator
    assert isinstance(emulator, BotAuthEmulator)
    emulator.reset()
    JwtTokenExtractor.metadataCache.pop(running_auth.url + METADATA_PATH, None)  # botbuilder's process-wide cache
    return emulator


class _Config:
    def __init__(self, metadata_url: str) -> None:
        self.APP_ID = DEMO_BOT_APP_ID
        self.APP_PASSWORD = "unused-for-inbound-validation"
        self.APP_TYPE = "MultiTenant"
        self.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = metadata_url
        self.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = "https://api.botframework.com"


async def _validate(running: RunningEmulator, authorization: str) -> None:
    activity = Activity(type="message", channel_id="msteams", service_url=SERVICE_URL)
    bfa = ConfigurationBotFrameworkAuthentication(_Config(running.url + METADATA_PATH))
    await bfa.authenticate_request(activity, authorization)


def test_metadata_and_jwks_have_the_fixture_shapes(auth: BotAuthEmulator, running_auth: RunningEmulator) -> None:
    metadata = requests.get(running_auth.url + METADATA_PATH, timeout=5).json()
    expected = load_fixture("botframework/openid_configuration_login_botframework.json")
    assert set(metadata) == set(expected)
    assert metadata["issuer"] == "https://api.botframework.com"
    assert metadata["jwks_uri"] == running_auth.url + "/v1/.well-known/keys"

    keys = requests.get(metadata["jwks_uri"], timeout=5).json()["keys"]
    shape = load_fixture("botframework/jwks_login_botframework_shape.json")["keys"][0]
    assert all(set(k) == set(shape) for k in keys)
    assert "msteams" in keys[0]["endorsements"]
    assert "msteams" not in keys[1]["endorsements"]


def test_minted_token_carries_the_channel_claims(auth: BotAuthEmulator) -> None:
    token = auth.minter().mint(SERVICE_URL)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == auth.active_kid
    claims = jwt.decode(token, auth.key(header["kid"]).public_pem(), algorithms=["RS256"], audience=DEMO_BOT_APP_ID)
    assert claims["iss"] == "https://api.botframework.com"
    assert claims["serviceurl"] == SERVICE_URL
    assert {"nbf", "exp"} <= set(claims) and "ver" not in claims  # a channel token, not an emulator token


async def test_botbuilder_accepts_a_valid_token(auth: BotAuthEmulator, running_auth: RunningEmulator) -> None:
    await _validate(running_auth, auth.minter().authorization(SERVICE_URL))


@pytest.mark.parametrize("variant", [TokenVariant.WRONG_AUD, TokenVariant.WRONG_ISS,
                                     TokenVariant.SERVICEURL_MISMATCH])
async def test_botbuilder_answers_401_for(auth: BotAuthEmulator, running_auth: RunningEmulator,
                                          variant: TokenVariant) -> None:
    with pytest.raises(PermissionError):  # CloudAdapter turns PermissionError into HTTP 401
        await _validate(running_auth, auth.minter().authorization(SERVICE_URL, variant))


@pytest.mark.parametrize(
    ("variant", "error"),
    [
        (TokenVariant.EXPIRED, jwt.ExpiredSignatureError),
        (TokenVariant.UNKNOWN_KID, IndexError),
        (TokenVariant.NOT_ENDORSED, Exception),
        (TokenVariant.GARBAGE, jwt.DecodeError),
    ],
)
async def test_botbuilder_rejects_with_a_non_permission_error_for(
    auth: BotAuthEmulator, running_auth: RunningEmulator, variant: TokenVariant, error: type[Exception]
) -> None:
    # PROTOCOL_NOTES §1: these surface as HTTP 500 from CloudAdapter, not 401; the product must handle it.
    with pytest.raises(error) as raised:
        await _validate(running_auth, auth.minter().authorization(SERVICE_URL, variant))
    assert not isinstance(raised.value, PermissionError)


async def test_key_rollover_publishes_and_signs_with_the_new_key(
    auth: BotAuthEmulator, running_auth: RunningEmulator
) -> None:
    old_kid = auth.active_kid
    new_kid = auth.add_key(["msteams"])
    kids = [k["kid"] for k in requests.get(running_auth.url + "/v1/.well-known/keys", timeout=5).json()["keys"]]
    assert {old_kid, new_kid} <= set(kids)
    token = auth.minter().mint(SERVICE_URL)
    assert jwt.get_unverified_header(token)["kid"] == new_kid
    await _validate(running_auth, f"Bearer {token}")
    auth.retire_key(old_kid)
    assert old_kid not in [k["kid"] for k in auth.jwks()["keys"]]


def test_tokens_can_be_minted_over_http_for_other_processes(running_auth: RunningEmulator,
                                                           auth: BotAuthEmulator) -> None:
    response = requests.post(running_auth.url + "/_emulator/mint",
                             json={"service_url": SERVICE_URL, "variant": "wrong_aud"}, timeout=5)
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    assert claims["aud"] != DEMO_BOT_APP_ID
    rotated = requests.post(running_auth.url + "/_emulator/keys", json={"endorsements": ["msteams"]}, timeout=5)
    assert rotated.json()["active_kid"] == rotated.json()["kid"]
