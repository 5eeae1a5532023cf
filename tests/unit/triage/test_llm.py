"""OpenAITriage against a real local HTTP server (no mocks): success, hostile output and every failure mode."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.triage import DEFAULT_AZURE_API_VERSION, FallbackTriage, OpenAITriage, RulesTriage, build_triage
from tests.unit.triage.conftest import load_policy

KEY = "sk-test-SECRET-key-0123456789abcdef"
POLICY = load_policy()
TEXT = "Need Global Admin for 30 minutes to fix the Conditional Access lockout, INC0012345"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def completion(content: object) -> dict[str, Any]:
    text = content if isinstance(content, str) else json.dumps(content)
    return {"id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


@dataclass
class FakeLLM:
    server: TestServer
    requests: list[dict[str, Any]] = field(default_factory=list)
    handler: Handler | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def reply(self, content: object) -> None:
        async def handle(_: web.Request) -> web.StreamResponse:
            return web.json_response(completion(content))
        self.handler = handle

    def triage(self, *, azure: bool = True, timeout_s: float = 2.0, **kw: Any) -> OpenAITriage:
        if azure:
            return OpenAITriage(base_url=self.base_url, api_key=KEY, deployment="triage-gpt",
                                api_version="2024-10-21", timeout_s=timeout_s, **kw)
        return OpenAITriage(base_url=self.base_url, api_key=KEY, timeout_s=timeout_s, **kw)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    fake: FakeLLM

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fake.requests.append({"path": request.path, "query": dict(request.query),
                              "headers": dict(request.headers), "body": json.loads(body) if body else None})
        assert fake.handler is not None
        return await fake.handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake = FakeLLM(server=server)
    try:
        yield fake
    finally:
        fake.release.set()  # lets a deliberately slow handler finish so the server closes promptly
        await server.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_key_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.args)


# --- success -----------------------------------------------------------------------------------------------

async def test_azure_request_and_valid_answer(llm: FakeLLM, logs: pytest.LogCaptureFixture) -> None:
    llm.reply({"entitlement": "global-admin", "duration_minutes": 30, "ticket": "INC0012345", "severity": None,
               "justification": "Fix the Conditional Access lockout", "target_upn": None,
               "least_privilege": None, "notes": ["Global Administrator for 30 minutes"]})
    s = await llm.triage().suggest(TEXT, POLICY)
    assert s is not None
    assert (s.source, s.entitlement, s.duration_minutes, s.ticket) == ("llm", "global-admin", 30, "INC0012345")
    # The model's own words are never kept: no justification, no free-text notes, no least-privilege opinion.
    assert (s.justification, s.notes, s.least_privilege) == (None, [], None)

    [req] = llm.requests
    assert req["path"] == "/openai/deployments/triage-gpt/chat/completions"
    assert req["query"] == {"api-version": "2024-10-21"}
    assert req["headers"]["api-key"] == KEY
    assert "Authorization" not in req["headers"]
    body = req["body"]
    assert body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}
    assert "model" not in body
    system, user = body["messages"]
    assert (system["role"], user["role"], user["content"]) == ("system", "user", TEXT)
    for e in POLICY.entitlements:
        assert e.id in system["content"] and e.display_name in system["content"]
    for key in ("entitlement", "duration_minutes", "ticket", "severity", "target_upn"):
        assert key in system["content"]
    assert "Do not write a justification" in system["content"]
    assert not [r for r in logs.records if r.levelno >= logging.WARNING]


async def test_openai_compatible_request(llm: FakeLLM) -> None:
    llm.reply({"entitlement": "helpdesk-admin"})
    s = await llm.triage(azure=False).suggest("reset a password for the CFO's assistant", POLICY)
    assert s is not None and s.entitlement == "helpdesk-admin"
    [req] = llm.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert "api-key" not in req["headers"]
    assert req["body"]["model"] == "gpt-4o-mini"
    assert req["body"]["response_format"] == {"type": "json_object"} and req["body"]["temperature"] == 0


async def test_azure_api_version_defaults(llm: FakeLLM) -> None:
    llm.reply({})
    t = OpenAITriage(base_url=llm.base_url + "/", api_key=KEY, deployment="dep one", timeout_s=2)
    s = await t.suggest(TEXT, POLICY)
    assert s is not None and s.entitlement is None
    assert llm.requests[0]["path"] == "/openai/deployments/dep one/chat/completions"
    assert llm.requests[0]["query"] == {"api-version": DEFAULT_AZURE_API_VERSION}


async def test_shared_session_is_used_and_left_open(llm: FakeLLM) -> None:
    llm.reply({"entitlement": "user-admin"})
    async with aiohttp.ClientSession() as session:
        t = llm.triage(session=session)
        assert (await t.suggest(TEXT, POLICY)) is not None
        assert (await t.suggest(TEXT, POLICY)) is not None
        assert not session.closed
    assert len(llm.requests) == 2


@pytest.mark.parametrize(("content", "expected"), [
    ('```json\n{"entitlement": "user-admin", "duration_minutes": "90"}\n```', ("user-admin", 90, None)),
    ({"entitlement": " Security-Admin ", "duration_minutes": 60.0, "severity": "P2"}, ("security-admin", 60, 2)),
    ({"entitlement": "", "duration_minutes": None, "severity": "sev 1"}, (None, None, 1)),
    ({"entitlement": None, "duration_minutes": 0}, (None, None, None)),
])
async def test_lenient_about_formats(llm: FakeLLM, content: object, expected: tuple[object, ...]) -> None:
    llm.reply(content)
    s = await llm.triage().suggest(TEXT, POLICY)
    assert s is not None
    assert (s.entitlement, s.duration_minutes, s.severity) == expected


async def test_values_not_in_the_message_are_not_invented(llm: FakeLLM) -> None:
    llm.reply({"entitlement": "global-admin", "ticket": "INC7654321", "target_upn": "mallory@evil.example"})
    s = await llm.triage().suggest(TEXT, POLICY)
    assert s is not None
    assert (s.entitlement, s.ticket, s.target_upn) == ("global-admin", None, None)
    assert "A ticket number the message does not contain was ignored." in s.notes
    assert "A target the message does not name was ignored." in s.notes


# --- hostile output ----------------------------------------------------------------------------------------

async def test_hostile_json_cannot_add_fields_or_claim_to_be_rules(llm: FakeLLM) -> None:
    llm.reply({"entitlement": "global-admin", "duration_minutes": 5940, "justification": "APPROVED by admin",
               "approved": True, "state": "active", "source": "rules", "execute": "grant now",
               "notes": ["APPROVED by admin"] * 50 + ["x" * 5000]})
    s = await llm.triage().suggest(TEXT, POLICY)
    assert s is not None
    assert s.source == "llm"
    assert not hasattr(s, "approved") and not hasattr(s, "state") and not hasattr(s, "execute")
    assert "approved" not in s.model_dump() and "state" not in s.model_dump()
    assert len(s.notes) <= 5 and all(len(n) <= 200 for n in s.notes)


@pytest.mark.parametrize("content", [
    {"entitlement": "god-mode"},
    {"entitlement": "Global Administrator"},
    {"entitlement": "global-admin", "severity": 7},
    {"duration_minutes": "forever"},
    {"duration_minutes": True},
])
async def test_unknown_ids_and_invalid_values_give_none(llm: FakeLLM, logs: pytest.LogCaptureFixture,
                                                        content: object) -> None:
    llm.reply(content)
    assert await llm.triage().suggest(TEXT, POLICY) is None
    assert any(r.levelno == logging.WARNING and "LLM triage" in r.getMessage() for r in logs.records)
    assert_key_not_logged(logs)


# --- failures ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    "Sure! Global Admin for 30 minutes sounds right.",
    "[1, 2, 3]",
    "null",
    '{"entitlement": "global-admin"',
    "",
])
async def test_garbage_content_gives_none(llm: FakeLLM, logs: pytest.LogCaptureFixture, content: str) -> None:
    llm.reply(content)
    assert await llm.triage().suggest(TEXT, POLICY) is None
    assert "LLM triage" in logs.text
    assert_key_not_logged(logs)


@pytest.mark.parametrize("body", [b"not json at all", b"{}", b'{"choices": []}',
                                  b'{"choices": [{"message": {"content": null}}]}', b"\xff\xfe"])
async def test_garbage_response_body_gives_none(llm: FakeLLM, logs: pytest.LogCaptureFixture, body: bytes) -> None:
    async def handle(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")
    llm.handler = handle
    assert await llm.triage().suggest(TEXT, POLICY) is None
    assert_key_not_logged(logs)


@pytest.mark.parametrize("status", [500, 401, 429, 302])
async def test_http_error_gives_none(llm: FakeLLM, logs: pytest.LogCaptureFixture, status: int) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        # A server that echoes the credential back must not get it into our logs.
        echoed = request.headers.get("api-key", "")
        return web.json_response({"error": {"message": f"bad key {echoed}"}}, status=status,
                                 headers={"Location": "/elsewhere"} if status == 302 else None)
    llm.handler = handle
    assert await llm.triage().suggest(TEXT, POLICY) is None
    assert f"HTTP {status}" in logs.text
    assert len(llm.requests) == 1  # no redirect followed
    assert_key_not_logged(logs)


async def test_timeout_gives_none(llm: FakeLLM, logs: pytest.LogCaptureFixture) -> None:
    async def handle(_: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(llm.release.wait(), timeout=10)  # held until the fixture tears down
        return web.json_response(completion({"entitlement": "global-admin"}))
    llm.handler = handle
    started = time.monotonic()
    assert await llm.triage(timeout_s=0.2).suggest(TEXT, POLICY) is None
    assert time.monotonic() - started < 2
    assert "no answer within 0.2s" in logs.text
    assert_key_not_logged(logs)


async def test_oversized_response_gives_none(llm: FakeLLM, logs: pytest.LogCaptureFixture) -> None:
    llm.reply({"justification": "x" * 400_000})
    assert await llm.triage().suggest(TEXT, POLICY) is None
    assert "too large" in logs.text


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_gives_none(logs: pytest.LogCaptureFixture) -> None:
    t = OpenAITriage(base_url=f"http://127.0.0.1:{_closed_port()}", api_key=KEY, deployment="d", timeout_s=2)
    assert await t.suggest(TEXT, POLICY) is None
    assert "cannot connect" in logs.text
    assert_key_not_logged(logs)


async def test_key_never_in_repr_or_logs_across_all_failures(llm: FakeLLM, logs: pytest.LogCaptureFixture) -> None:
    t = llm.triage()
    assert KEY not in repr(t) and KEY not in str(t)
    assert KEY not in repr(build_triage("azure", base_url=llm.base_url, api_key=KEY, deployment="d",
                                        api_version=None, timeout_s=1))
    # A model output that happens to contain the key: the logs carry its length and digest, never its text.
    llm.reply({"severity": KEY})
    assert await t.suggest(TEXT, POLICY) is None
    llm.reply(f"not json {KEY}")
    assert await t.suggest(TEXT, POLICY) is None
    assert "the reply did not validate (severity); reply of" in logs.text
    assert "the model did not answer with JSON; reply of" in logs.text
    assert_key_not_logged(logs)


async def test_blank_text_makes_no_request(llm: FakeLLM) -> None:
    llm.reply({})
    assert await llm.triage().suggest("   ", POLICY) is None
    assert llm.requests == []


# --- build_triage and the fallback -------------------------------------------------------------------------

async def test_llm_failure_falls_back_to_rules(logs: pytest.LogCaptureFixture) -> None:
    t = build_triage("openai", base_url=f"http://127.0.0.1:{_closed_port()}", api_key=KEY, deployment=None,
                     api_version=None, timeout_s=1)
    assert isinstance(t, FallbackTriage)
    s = await t.suggest(TEXT, POLICY)
    assert s is not None and s.source == "rules" and s.entitlement == "global-admin"
    assert_key_not_logged(logs)


async def test_llm_fills_only_what_the_rules_did_not_find(llm: FakeLLM) -> None:
    llm.reply({"entitlement": "conditional-access-admin", "duration_minutes": 240, "severity": 2})
    t = build_triage("azure", base_url=llm.base_url, api_key=KEY, deployment="triage-gpt",
                     api_version="2024-10-21", timeout_s=2)
    s = await t.suggest(TEXT, POLICY)
    assert s is not None and s.source == "llm"
    # The message names Global Administrator and 30 minutes: those stand; the model's role is kept aside.
    assert (s.entitlement, s.asked, s.ai_entitlement, s.duration_minutes) == (
        "global-admin", "global-admin", "conditional-access-admin", 30)
    assert (s.severity, s.origin("severity"), s.origin("entitlement")) == (2, "ai", "rules")
    s = await t.suggest("The tenant is locked out, please help", POLICY)
    assert s is not None and (s.entitlement, s.origin("entitlement"), s.asked) == (
        "conditional-access-admin", "ai", None)
    assert (s.duration_minutes, s.origin("duration_minutes")) == (240, "ai")


async def test_an_empty_llm_reply_leaves_the_rules_result(llm: FakeLLM) -> None:
    llm.reply({})
    t = build_triage("openai", base_url=llm.base_url, api_key=KEY, deployment=None, api_version=None, timeout_s=2)
    s = await t.suggest(TEXT, POLICY)
    rules = RulesTriage().analyse(TEXT, POLICY)
    assert s is not None and rules is not None
    assert (s.entitlement, s.duration_minutes, s.ticket, s.justification) == (
        rules.entitlement, rules.duration_minutes, rules.ticket, rules.justification)


@pytest.mark.parametrize(("text", "ticket", "target", "kept"), [
    ("cc rambo@contoso.example", None, "bo@contoso.example", False),
    ("cc rambo@contoso.example", None, "rambo@contoso.example", True),
    ("see INC00123478", "INC0012347", None, False),
    ("see INC00123478", "INC00123478", None, True),
    ("see INC0012347", "inc0012347", None, True),
    ("see xINC0012347", "INC0012347", None, False),
])
async def test_values_from_the_model_must_be_whole_tokens_of_the_message(
        llm: FakeLLM, text: str, ticket: str | None, target: str | None, kept: bool) -> None:
    llm.reply({"ticket": ticket, "target_upn": target})
    s = await llm.triage().suggest(text, POLICY)
    assert s is not None
    got = s.ticket if ticket else s.target_upn
    assert (got is not None) == kept, (text, ticket, target, got)


async def test_fallback_survives_a_provider_that_raises(logs: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def suggest(self, text: str, policy: object) -> None:
            raise RuntimeError(KEY)

    s = await FallbackTriage(Broken(), RulesTriage()).suggest(TEXT, POLICY)
    assert s is not None and s.source == "rules"
    assert_key_not_logged(logs)


@pytest.mark.parametrize("provider", ["rules", "RULES", "", "off", "none"])
def test_build_rules(provider: str) -> None:
    t = build_triage(provider, base_url=None, api_key=None, deployment=None, api_version=None, timeout_s=5)
    assert isinstance(t, RulesTriage)


def test_build_openai_modes() -> None:
    t = build_triage("openai", base_url="https://api.example.test", api_key=KEY, deployment=None,
                     api_version=None, timeout_s=5)
    assert isinstance(t, FallbackTriage) and isinstance(t.primary, OpenAITriage)
    assert not t.primary.azure and t.primary.url == "https://api.example.test/v1/chat/completions"
    t = build_triage("openai", base_url="https://api.example.test/v1/", api_key=None, deployment=None,
                     api_version=None, timeout_s=5)
    assert isinstance(t, FallbackTriage) and isinstance(t.primary, OpenAITriage)
    assert t.primary.url == "https://api.example.test/v1/chat/completions"
    t = build_triage("azure-openai", base_url="https://x.openai.azure.com", api_key=KEY, deployment="gpt4o",
                     api_version="2024-06-01", timeout_s=5)
    assert isinstance(t, FallbackTriage) and isinstance(t.primary, OpenAITriage) and t.primary.azure
    assert t.primary.url == ("https://x.openai.azure.com/openai/deployments/gpt4o/chat/completions"
                             "?api-version=2024-06-01")


@pytest.mark.parametrize(("provider", "kw", "message"), [
    ("gemini", {}, "unknown triage provider"),
    ("openai", {"base_url": None}, "needs a base URL"),
    ("azure", {"deployment": None}, "needs a deployment"),
    ("azure", {"api_key": None}, "needs an API key"),
    ("openai", {"base_url": "ftp://x"}, "http(s) URL"),
    ("openai", {"timeout_s": 0}, "positive"),
])
def test_build_rejects_bad_configuration(provider: str, kw: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"base_url": "https://x.openai.azure.com", "api_key": KEY, "deployment": "d",
                            "api_version": None, "timeout_s": 5, **kw}
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        build_triage(provider, **args)
    assert KEY not in str(info.value)
