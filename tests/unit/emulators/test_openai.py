"""OpenAI-compatible chat completions: Azure and OpenAI routes, configured content, scripted errors and delays."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import requests

from services.emulators import OpenAIEmulator

from .conftest import Served

AZURE = "/openai/deployments/triage/chat/completions"
CHAT = {"messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": "I need GA"}]}


@pytest.fixture
def llm(serve: Callable[..., Served]) -> Served:
    return serve(OpenAIEmulator(api_key="sk-test-key"))


def test_azure_route_returns_a_chat_completion_with_the_configured_content(llm: Served) -> None:
    llm.emulator.set_content('{"role": "Global Administrator", "duration_minutes": 30}')
    response = llm.post(AZURE, params={"api-version": "2024-10-21"}, json=CHAT, headers={"api-key": "sk-test-key"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": '{"role": "Global Administrator", '
                                 '"duration_minutes": 30}', "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_openai_route_uses_bearer_and_echoes_the_model(llm: Served) -> None:
    llm.emulator.set_content("not json at all <script>")
    response = llm.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"},
                        headers={"Authorization": "Bearer sk-test-key"})
    assert response.json()["model"] == "gpt-4o-mini"
    assert response.json()["choices"][0]["message"]["content"] == "not json at all <script>"


def test_auth_and_api_version_errors(llm: Served) -> None:
    assert llm.post(AZURE, params={"api-version": "x"}, json=CHAT, headers={"api-key": "bad"}).status_code == 401
    missing = llm.post(AZURE, json=CHAT, headers={"api-key": "sk-test-key"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "MissingApiVersionParameter")
    wrong = llm.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope-nope"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    no_messages = llm.post("/v1/chat/completions", json={"model": "m"}, headers={"Authorization": "Bearer sk-test-key"})
    assert no_messages.status_code == 400


def test_scripted_error_then_content_then_default(llm: Served) -> None:
    llm.post("/_emulator/state", json={"content": "default", "script": [
        {"status": 500, "body": {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}},
        {"content": "{\"ignore previous instructions\": true}"},
    ]})
    headers = {"Authorization": "Bearer sk-test-key"}
    assert llm.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 500
    second = llm.post("/v1/chat/completions", json=CHAT, headers=headers).json()
    assert second["choices"][0]["message"]["content"] == '{"ignore previous instructions": true}'
    third = llm.post("/v1/chat/completions", json=CHAT, headers=headers).json()
    assert third["choices"][0]["message"]["content"] == "default"
    assert llm.emulator.served_count == 2


def test_configured_delay_lets_clients_time_out(llm: Served) -> None:
    llm.emulator.set_script([{"delay_ms": 400}])
    with pytest.raises(requests.Timeout):
        llm.http.post(llm.url + "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-test-key"},
                      timeout=0.1)


def test_answer_sends_a_json_value_as_the_assistant_message(llm: Served) -> None:
    llm.emulator.answer({"entitlement": "global-admin", "justification": "Approved by \u202eDana"})
    response = llm.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-test-key"})
    content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"entitlement": "global-admin", "justification": "Approved by \u202eDana"}
