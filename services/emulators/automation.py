"""A runbook webhook receiver in the shape of Azure Automation's webhooks and Logic Apps' "When an HTTP request is
received" trigger: ``POST /webhooks/{name}`` (the real URL carries a token or a SAS signature in its query string,
which is never kept here), any body, answered ``202 {"JobIds": [...]}`` as Automation does when it queued the
runbook. A runbook reads the body and headers from ``$WebhookData`` (RequestBody, RequestHeader).

Each delivery is recorded (hook name, headers, body, time); with ``secret`` set, breakglass's HMAC signature
(``X-Breakglass-Signature: sha256=<hex of HMAC-SHA256(secret, "<X-Breakglass-Timestamp>." + body)>``) is checked and a
bad one answered 401. Timeouts and 5xx come from the ordinary fault injection (``latency_ms``, ``status``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from typing import Any

from aiohttp import web

from .base import Emulator
from .clock import Clock, NowFn
from .responses import json_response

KEPT_HEADERS = ("Content-Type", "X-Breakglass-Delivery", "X-Breakglass-Attempt", "X-Breakglass-Timestamp",
                "X-Breakglass-Signature", "User-Agent")


class AutomationEmulator(Emulator):
    name = "automation"

    def __init__(self, *, secret: str = "", clock: Clock | NowFn | None = None, fault_seed: int = 0) -> None:
        self._secret = secret
        super().__init__(clock=clock, fault_seed=fault_seed)

    def _clear_state(self) -> None:
        self.secret: str = self._secret
        self._deliveries: list[dict[str, Any]] = []

    def _snapshot(self) -> dict[str, Any]:
        return {"deliveries": copy.deepcopy(self._deliveries), "checks_signatures": bool(self.secret)}

    def _apply_state(self, data: dict[str, Any]) -> None:
        data = dict(data)
        if "secret" in data:
            self.secret = str(data.pop("secret"))
        super()._apply_state(data)

    def deliveries(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._deliveries)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/{name}", self._h_webhook)

    async def _h_webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        valid = None
        if self.secret:
            stamp = request.headers.get("X-Breakglass-Timestamp", "")
            expected = "sha256=" + hmac.new(self.secret.encode(), stamp.encode() + b"." + raw,
                                            hashlib.sha256).hexdigest()
            valid = hmac.compare_digest(expected, request.headers.get("X-Breakglass-Signature", ""))
        job = str(uuid.uuid4())
        with self.lock:
            self._deliveries.append({"hook": request.match_info["name"], "at": self.clock.now().isoformat(),
                                     "headers": {k: request.headers[k] for k in KEPT_HEADERS if k in request.headers},
                                     "body": body, "signature_valid": valid, "job_id": job if valid is not False
                                     else None})
        if valid is False:
            return json_response({"error": "signature does not match"}, status=401)
        return json_response({"JobIds": [job]}, status=202)
