"""Runbook webhooks: one signed HTTPS POST per attempt (the follow-up job retries with back-off, so a slow
receiver never holds a worker for the whole retry schedule). The URL is never logged: Azure Automation and Logic
Apps URLs carry the receiver's token."""

from __future__ import annotations

from services.clients.http import HttpClient, RetryPolicy, UpstreamError
from services.ports import RunbookHookError

ONE_ATTEMPT = RetryPolicy(max_attempts=1, budget_s=60.0)


class RunbookWebhookClient:
    def __init__(self) -> None:
        self.http = HttpClient("runbook-webhook", retry=ONE_ATTEMPT)

    def deliver(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        self.http.timeout = (min(timeout_s, 5.0), timeout_s)
        try:
            response = self.http.request("POST", url, data=body, headers=headers)
        except UpstreamError as exc:
            kind = exc.kind if exc.kind in {"timeout", "connection"} else "http"
            raise RunbookHookError(kind, exc.status, exc.code or exc.kind) from None
        return response.status_code
