"""bot.auth.ValidatedTokens: how long an accepted token is remembered, and for what."""

from __future__ import annotations

from botframework.connector.auth import AuthenticateRequestResult, ClaimsIdentity

from bot.auth import ValidatedTokens

URL = "https://smba.trafficmanager.net/emea/"


class Clock:
    def __init__(self, at: float):
        self.at = at

    def __call__(self) -> float:
        return self.at


def accepted(**claims: object) -> AuthenticateRequestResult:
    result = AuthenticateRequestResult()
    result.claims_identity = ClaimsIdentity(dict(claims), True)
    result.audience = "https://api.botframework.com"
    result.caller_id = "urn:botframework:azure"
    return result


def test_remembered_until_the_token_expires() -> None:
    clock = Clock(1_000.0)
    tokens = ValidatedTokens(now=clock)
    tokens.remember("Bearer a", "msteams", URL, accepted(exp=1_100))
    clock.at = 1_099.9
    hit = tokens.get("Bearer a", "msteams", URL)
    assert hit is not None and hit.claims_identity.claims["exp"] == 1_100 and hit.caller_id == "urn:botframework:azure"
    clock.at = 1_100.0
    assert tokens.get("Bearer a", "msteams", URL) is None


def test_remembered_for_at_most_five_minutes_however_long_the_token_lives() -> None:
    clock = Clock(1_000.0)
    tokens = ValidatedTokens(now=clock)
    tokens.remember("Bearer a", "msteams", URL, accepted(exp=1_000 + 3_600))
    clock.at = 1_000 + ValidatedTokens.REMEMBER_S - 0.1
    assert tokens.get("Bearer a", "msteams", URL) is not None
    clock.at = 1_000 + ValidatedTokens.REMEMBER_S
    assert tokens.get("Bearer a", "msteams", URL) is None


def test_only_for_the_same_header_channel_and_service_url() -> None:
    tokens = ValidatedTokens(now=Clock(1_000.0))
    tokens.remember("Bearer a", "msteams", URL, accepted(exp=2_000))
    assert tokens.get("Bearer a", "msteams", URL) is not None
    assert tokens.get("Bearer b", "msteams", URL) is None
    assert tokens.get("Bearer a", "webchat", URL) is None
    assert tokens.get("Bearer a", "msteams", URL + "x") is None


def test_a_token_without_an_expiry_or_already_expired_is_not_remembered() -> None:
    tokens = ValidatedTokens(now=Clock(1_000.0))
    tokens.remember("Bearer a", "msteams", URL, accepted())
    tokens.remember("Bearer b", "msteams", URL, accepted(exp="soon"))
    tokens.remember("Bearer c", "msteams", URL, accepted(exp=999))
    assert [tokens.get(h, "msteams", URL) for h in ("Bearer a", "Bearer b", "Bearer c")] == [None, None, None]


def test_each_hit_is_a_fresh_result_and_the_oldest_entries_make_room() -> None:
    tokens = ValidatedTokens(now=Clock(1_000.0))
    for n in range(ValidatedTokens.MAX_ENTRIES + 1):
        tokens.remember(f"Bearer {n}", "msteams", URL, accepted(exp=2_000))
    assert tokens.get("Bearer 0", "msteams", URL) is None
    first, second = tokens.get("Bearer 1", "msteams", URL), tokens.get("Bearer 1", "msteams", URL)
    assert first is not None and second is not None and first is not second
    assert first.claims_identity is second.claims_identity
