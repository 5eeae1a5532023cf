"""The aiohttp applications. Public: /api/messages (Teams), the ITSM webhooks and /healthz (for load balancers).
Operations, on their own listener (BREAKGLASS_METRICS_HOST/PORT, loopback by default): /readyz and /metrics, which
tell how many people hold elevated roles right now, and /healthz.

Every bad request gets a short 4xx and no stack trace: body problems 400/413/415, token problems 401 (whatever
exception botbuilder raises while validating), another tenant or channel 403, audited before any state lookup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from aiohttp import web
from botbuilder.core import InvokeResponse
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import Activity
from botframework.connector.auth import BotFrameworkAuthentication

from bot.auth import SigningKeyRefresh, ValidatedTokens, build_authentication
from bot.clients import ReusingAuthentication
from bot.handler import BreakglassBot
from bot.legal import add_routes as add_legal_pages
from bot.webhooks import ItsmWebhook
from cards.builder import prepare as prepare_cards
from services.composition import Services
from services.metrics import METRICS, metrics_response
from services.settings import Settings
from services.state.queue import WorkerRoll
from services.triage import TriageProvider
from services.workflow.outage import OutageWatch

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 32
MAX_AUTH_HEADER = 16 * 1024
# aiohttp answers an 8 KB+ header line itself with a 400 that echoes part of it; let oversized Authorization
# headers (up to a bounded 2 MiB) reach the endpoint so they get the same 401 as any other bad token.
SERVER_LIMITS = {"max_field_size": 2 * 1024 * 1024, "max_line_size": 16 * 1024}
APP_KEY = web.AppKey("breakglass", dict)
OPS_RUNNER_KEY = web.AppKey("ops_runner", web.AppRunner)
OUTAGE_KEY = web.AppKey("outage", OutageWatch)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Depth of nested containers, iteratively (a recursive walk is itself a stack-overflow vector)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


async def read_json_body(request: web.Request, max_bytes: int) -> Any:
    """Read and parse the body within limits; raises web.HTTPException-like responses via ValueError tags."""
    if request.content_type != "application/json":
        raise _Reject(415, "Content-Type must be application/json")
    if request.content_length is not None and request.content_length > max_bytes:
        raise _Reject(413, f"body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise _Reject(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    # Nesting cannot exceed the number of opening brackets: counting them is C-speed, so the byte-by-byte hint
    # only runs for bodies that could be too deep (a Teams activity has a dozen or so).
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth_hint(raw) > MAX_JSON_DEPTH:
        raise _Reject(400, "JSON nested too deeply")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise _Reject(400, "body is not valid JSON") from None
    if json_depth(body) > MAX_JSON_DEPTH:
        raise _Reject(400, "JSON nested too deeply")
    return body


def json_depth_hint(raw: bytes) -> int:
    """Cheap pre-parse bound on nesting: counts brackets outside strings well enough to refuse 'deep JSON'
    bombs before json.loads recurses through them."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class _Reject(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


def activity_tenant(activity: Activity) -> str | None:
    # botbuilder 4.17.1 drops conversation.tenantId; channelData.tenant.id is what Teams always sends.
    data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
    tenant = (data.get("tenant") or {}).get("id") if isinstance(data.get("tenant"), dict) else None
    if not tenant and activity.conversation is not None:
        tenant = getattr(activity.conversation, "tenant_id", None)
    return str(tenant) if tenant else None


class MessagesEndpoint:
    def __init__(self, settings: Settings, services: Services, bot: BreakglassBot,
                 authentication: BotFrameworkAuthentication):
        self.settings = settings
        self.services = services
        self.bot = bot
        self.auth = ReusingAuthentication(authentication)  # per-turn clients built once (bot/clients.py)
        self.key_refresh = SigningKeyRefresh()
        self.validated = ValidatedTokens()
        self.adapter = CloudAdapter(self.auth)
        self.adapter.on_turn_error = self._on_turn_error
        runtime = services.runtime
        self.outage = OutageWatch("bot", runtime.redis, settings.key_prefix,
                                  lambda title, facts: services.notifier.alert(title, facts, "critical"))

    async def _on_turn_error(self, context: Any, exc: Exception) -> None:
        log.error("turn failed", extra={"error_type": type(exc).__name__, "error": str(exc)[:300],
                                        "activity_id": getattr(context.activity, "id", None)})
        raise exc

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json_body(request, self.settings.max_body_bytes)
        except _Reject as rej:
            METRICS.http_rejected.labels(reason=str(rej.status)).inc()
            return error(rej.status, rej.message)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return error(400, "body must be a Bot Framework activity (an object with a type)")
        try:
            activity = Activity().deserialize(body)
        except Exception:  # noqa: BLE001 - msrest raises many types for malformed activities
            return error(400, "body is not a valid activity")
        header = request.headers.get("Authorization", "")
        if not self.settings.auth_disabled and (not header or len(header) > MAX_AUTH_HEADER):
            METRICS.http_rejected.labels(reason="401").inc()
            return error(401, "missing or malformed Authorization header")
        try:
            auth_result = await self._authenticate(activity, header)
        except Exception as exc:  # noqa: BLE001 - botbuilder 4.17.1 raises PermissionError, PyJWT errors,
            # IndexError (unknown kid) and bare Exception (endorsements); all of them mean "not authenticated".
            log.info("token rejected", extra={"error_type": type(exc).__name__})
            METRICS.http_rejected.labels(reason="401").inc()
            return error(401, "invalid token")
        rejection = await self._check_origin(activity)
        if rejection is not None:
            return rejection
        try:
            response = await self.adapter.process_activity(auth_result, activity, self.bot.on_turn)
        except Exception as exc:
            kind = self.outage.failed(exc)  # logged once per outage, counted every time
            if kind is not None:
                return error(503, "breakglass cannot store anything right now; try again in a minute")
            ref = uuid.uuid4().hex[:12]
            log.exception("activity processing failed", extra={"ref": ref, "activity_type": activity.type})
            if activity.type == "invoke":
                return web.json_response({"statusCode": 500, "type": "application/vnd.microsoft.error",
                                          "value": {"code": "InternalError",
                                                    "message": f"Something went wrong (ref {ref}). Try again."}})
            return error(503, f"temporarily unable to process the activity (ref {ref})")
        if self.outage.current is not None:  # this turn wrote to Redis again: the outage is over
            await asyncio.to_thread(self.outage.ended)
        if isinstance(response, InvokeResponse):
            return web.json_response(response.body, status=response.status or 200)
        return web.Response(status=201)

    async def _authenticate(self, activity: Activity, header: str) -> Any:
        if self.settings.auth_disabled:
            return await self.auth.authenticate_request(activity, header)
        remembered = self.validated.get(header, activity.channel_id, activity.service_url)
        if remembered is not None:
            return remembered
        try:
            result = await self.auth.authenticate_request(activity, header)
        except Exception:
            if not self.key_refresh.unknown_key(header):
                raise
            result = await self.auth.authenticate_request(activity, header)  # once more, with fresh signing keys
        self.validated.remember(header, activity.channel_id, activity.service_url, result)
        return result

    async def _check_origin(self, activity: Activity) -> web.Response | None:
        reason = None
        if activity.channel_id != "msteams":
            reason = f"channel {activity.channel_id!r} is not served"
        else:
            tenant = activity_tenant(activity)
            if not tenant or tenant.lower() != self.settings.served_tenant_id.lower():
                reason = f"tenant {tenant!r} is not served"
        if reason is None:
            return None
        sender = activity.from_property
        await asyncio.to_thread(self.services.runtime.audit.append, "activity.rejected",
                                actor=(getattr(sender, "aad_object_id", None) or getattr(sender, "id", None)
                                       or "unknown"),
                                data={"reason": reason, "channel": activity.channel_id,
                                      "tenant": activity_tenant(activity), "type": activity.type})
        METRICS.http_rejected.labels(reason="403").inc()
        return error(403, reason)


def create_app(settings: Settings, services: Services, triage: TriageProvider | None = None,
               authentication: BotFrameworkAuthentication | None = None) -> web.Application:
    from services.triage import build_triage

    if triage is None:
        triage = build_triage(settings.triage_provider, base_url=settings.triage_base_url,
                              api_key=settings.triage_api_key.get_secret_value() if settings.triage_api_key else None,
                              deployment=settings.triage_deployment, api_version=settings.triage_api_version,
                              timeout_s=settings.triage_timeout_s)
    prepare_cards()  # build the card models now, not in the first requests that render a card
    bot = BreakglassBot(settings, services, triage)
    endpoint = MessagesEndpoint(settings, services, bot, authentication or build_authentication(settings))
    webhook = ItsmWebhook(settings, services)
    # aiohttp's own limit backs up ours for every route.
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[APP_KEY] = {"endpoint": endpoint, "bot": bot}

    app.router.add_post("/api/messages", endpoint.handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/itsm/{provider}", webhook.handle)
    add_legal_pages(app, settings)
    app[OUTAGE_KEY] = endpoint.outage
    return app


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_ops_app(services: Services, outage: OutageWatch | None = None) -> web.Application:
    """/readyz and /metrics: never on the public listener (see `serve_ops`). `outage` is the bot's own watch over
    Redis refusing writes (the public app's `app[OUTAGE_KEY]`), so both listeners tell one story."""
    settings = services.settings
    roll = WorkerRoll(services.runtime.redis, settings.key_prefix, settings.reconcile_interval_s)
    watch = outage or OutageWatch("bot", services.runtime.redis, settings.key_prefix,
                                  lambda title, facts: services.notifier.alert(title, facts, "critical"))

    async def readyz(_: web.Request) -> web.Response:
        problems = []
        try:
            if await asyncio.to_thread(watch.writable):
                if watch.current is not None:
                    await asyncio.to_thread(watch.ended)
            else:
                problems.append(f"redis: refusing writes ({watch.current.kind if watch.current else 'outage'})")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"redis: {type(exc).__name__}")
        try:
            services.runtime.policies.current()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"policy: {type(exc).__name__}")
        # Degraded, not unready: taking the bot out of the load balancer brings no worker back, and approvals
        # given meanwhile are granted once one runs (the reconciler re-drives them).
        degraded = []
        if services.runtime.policies.last_error:
            degraded.append("policy: the latest edit is invalid; serving the previous policy")
        if not problems:
            try:
                if not await asyncio.to_thread(roll.alive):
                    degraded.append(f"workers: none running (none heard from for {roll.stale_after_s:.0f} s); "
                                    "approved requests wait")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"redis: {type(exc).__name__}")
        if not problems:
            try:  # degraded, never silent: the emergency accounts are not being watched
                degraded += await asyncio.to_thread(services.emergency_watch.problems)
            except Exception as exc:  # noqa: BLE001
                degraded.append(f"emergency watch: {type(exc).__name__}")
        status = 503 if problems else 200
        state = "not ready" if problems else "degraded" if degraded else "ready"
        return web.json_response({"status": state, "problems": problems + degraded}, status=status)

    async def metrics(_: web.Request) -> web.Response:
        return metrics_response(services.runtime.store)

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def serve_ops(app: web.Application, ops: web.Application, host: str, port: int) -> None:
    """Run `ops` on its own listener for as long as `app` runs (started and stopped with it)."""
    async def start(_: web.Application) -> None:
        runner = web.AppRunner(ops, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        app[OPS_RUNNER_KEY] = runner
        # With port 0 the address says which port was picked.
        log.info("metrics and readiness listening", extra={"listen": [list(a)[:2] for a in runner.addresses]})

    async def stop(_: web.Application) -> None:
        if OPS_RUNNER_KEY in app:
            await app[OPS_RUNNER_KEY].cleanup()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
