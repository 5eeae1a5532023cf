"""OpenAI-compatible chat completions, Azure style (``/openai/deployments/{d}/chat/completions``, ``api-key``)
and OpenAI style (``/v1/chat/completions``, Bearer).

The assistant message content is whatever the test configured (valid JSON, hostile JSON, garbage), optionally
via a script of per-call steps (content, an error, a delay) consumed in order, for timeout/retry tests.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from typing import Any

from aiohttp import web

from .base import Emulator
from .clock import Clock, NowFn
from .responses import any_body_response, json_response, read_json

AZURE_AUTH_ERROR = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
STEP_KEYS = frozenset({"content", "status", "body", "headers", "delay_ms", "finish_reason"})


def _openai_error(status: int, message: str, error_type: str, code: str | None, param: str | None = None) -> Any:
    return json_response({"error": {"message": message, "type": error_type, "param": param, "code": code}},
                         status=status)


def _rough_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class OpenAIEmulator(Emulator):
    name = "openai"

    def __init__(
        self,
        *,
        api_key: str = "breakglass-demo-openai-key",
        content: str = '{"role": null, "duration_minutes": null, "confidence": 0.0}',
        model: str = "gpt-4o-mini-2024-07-18",
        clock: Clock | NowFn | None = None,
        fault_seed: int = 0,
    ) -> None:
        self._defaults = {"api_key": api_key, "content": content, "model": model}
        super().__init__(clock=clock, fault_seed=fault_seed)

    # ----- state -----------------------------------------------------------------------------------------
    def _clear_state(self) -> None:
        self.api_key: str = self._defaults["api_key"]
        self.content: str = self._defaults["content"]
        self.model: str = self._defaults["model"]
        self.delay_ms: float = 0.0
        self.script: list[dict[str, Any]] = []
        self.served_count = 0

    def _snapshot(self) -> dict[str, Any]:
        return {"content": self.content, "model": self.model, "delay_ms": self.delay_ms,
                "script": copy.deepcopy(self.script), "served_count": self.served_count}

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        for key in ("api_key", "content", "model"):
            if key in data:
                setattr(self, key, str(data.pop(key)))
        if "delay_ms" in data:
            self.delay_ms = float(data.pop("delay_ms"))
        if "script" in data:
            self.set_script(data.pop("script"))
        super()._apply_state(data)

    # ----- Python API ------------------------------------------------------------------------------------
    def set_content(self, content: str) -> None:
        with self.lock:
            self.content = content

    def answer(self, reply: Any) -> None:
        """Answer every call with this JSON value as the assistant message (what a model in JSON mode returns)."""
        self.set_content(json.dumps(reply))

    def set_script(self, steps: list[dict[str, Any]]) -> None:
        """Per-call steps, e.g. ``[{"delay_ms": 5000}, {"status": 500}, {"content": "{}"}]``; then ``content``."""
        for step in steps:
            unknown = set(step) - STEP_KEYS
            if unknown:
                raise ValueError(f"unknown script step keys: {sorted(unknown)}")
        with self.lock:
            self.script = copy.deepcopy(steps)

    # ----- pipeline hooks --------------------------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.StreamResponse | None:
        if request.path.startswith("/openai/"):
            if request.headers.get("api-key") != self.api_key:
                return json_response({"error": {"code": "401", "message": AZURE_AUTH_ERROR}}, status=401)
            if not request.query.get("api-version"):
                return json_response({"error": {
                    "code": "MissingApiVersionParameter",
                    "message": "The api-version query parameter (?api-version=) is required for all requests.",
                }}, status=400)
        elif request.path.startswith("/v1/"):
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or key.strip() != self.api_key:
                shown = (key.strip()[:3] + "*" * 4 + key.strip()[-4:]) if key.strip() else ""
                return _openai_error(401, f"Incorrect API key provided: {shown}.", "invalid_request_error",
                                     "invalid_api_key")
        return None

    def fault_defaults(self, status: int, request: web.Request) -> tuple[dict[str, str], Any]:
        if status == 429:
            return {"Retry-After": "1"}, {"error": {
                "message": "Rate limit reached for requests", "type": "requests", "param": None,
                "code": "rate_limit_exceeded"}}
        return {}, {"error": {"message": f"Injected HTTP {status}", "type": "server_error", "param": None,
                              "code": None}}

    # ----- routes ----------------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._h_completion)
        app.router.add_post("/v1/chat/completions", self._h_completion)

    async def _h_completion(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
        except ValueError:
            return _openai_error(400, "We could not parse the JSON body of your request.",
                                 "invalid_request_error", None)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return _openai_error(400, "'messages' is a required property", "invalid_request_error", None,
                                 "messages")
        with self.lock:
            step = self.script.pop(0) if self.script else {}
            delay_ms = float(step.get("delay_ms", self.delay_ms))
            content = step.get("content", self.content)
            model = self.model
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)  # runs on the emulator's own loop: the client just waits
        if "status" in step:
            return any_body_response(int(step["status"]), step.get("body"), step.get("headers") or {})
        with self.lock:
            self.served_count += 1
        azure = request.path.startswith("/openai/")
        return json_response(self._completion(body, content, model, azure, step.get("finish_reason", "stop")))

    def _completion(self, body: dict[str, Any], content: str, model: str, azure: bool, finish: str) -> dict[str, Any]:
        prompt = " ".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
        prompt_tokens, completion_tokens = _rough_tokens(prompt), _rough_tokens(content)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": finish,
        }
        result: dict[str, Any] = {
            "id": "chatcmpl-" + secrets.token_urlsafe(21),
            "object": "chat.completion",
            "created": int(self.clock.now().timestamp()),
            "model": model if azure else str(body.get("model") or model),
            "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": "fp_emulator",
        }
        if azure:  # Azure OpenAI adds content-filter annotations
            choice["content_filter_results"] = {}
            result["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
        return result
