"""`breakglass serve`: the Teams endpoint. Refuses to start without credentials (fail closed)."""

from __future__ import annotations

import logging

from aiohttp import web

from bot.access_log import AccessLogger
from bot.app import OUTAGE_KEY, SERVER_LIMITS, create_app, create_ops_app, serve_ops
from services.composition import Runtime, Services
from services.heap import freeze_startup_objects
from services.logs import configure_logging
from services.settings import get_settings
from services.state.redis_conn import require_safe_redis

log = logging.getLogger(__name__)

BANNER = ("AUTHENTICATION IS DISABLED: BREAKGLASS_ENV=development and no MicrosoftAppId. Anyone who can reach "
          "{host}:{port} can act as any Teams user. This mode exists only for local development and is only "
          "allowed on a loopback address.")


def run_serve(host: str | None = None, port: int | None = None) -> int:
    settings = get_settings()
    if host is not None or port is not None:
        settings = settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items()
                                               if v is not None})
    settings.require(bot=True, graph=not settings.development)
    configure_logging(settings)
    if settings.auth_disabled:
        log.warning(BANNER.format(host=settings.host, port=settings.port))
    runtime = Runtime(settings)
    require_safe_redis(runtime.redis)
    policy = runtime.policies.current()
    log.info("policy loaded", extra={"policy_name": policy.name, "digest": policy.digest(),
                                     "entitlements": len(policy.entitlements)})
    services = Services(runtime)
    app = create_app(settings, services)
    serve_ops(app, create_ops_app(services, app[OUTAGE_KEY]), settings.metrics_host, settings.metrics_port)
    freeze_startup_objects()
    web.run_app(app, host=settings.host, port=settings.port, access_log=logging.getLogger("breakglass.access"),
                access_log_class=AccessLogger, print=None,
                handle_signals=True, shutdown_timeout=10, **SERVER_LIMITS)
    return 0
