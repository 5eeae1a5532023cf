"""Wires the adapters together from settings, once per process. Entry points (bot/, jobs/, the CLI) build a
Runtime and take what they need from it; nothing else reads the environment."""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import redis

from services.audit import AuditLog
from services.clock import Clock, OffsetClock, SystemClock
from services.policy_source import PolicySource
from services.redis_conn import connect
from services.settings import ConfigurationError, Settings
from services.store import RequestStore

log = logging.getLogger(__name__)


def audit_key(settings: Settings) -> bytes:
    if settings.audit_hmac_key is not None and settings.audit_hmac_key.get_secret_value():
        return settings.audit_hmac_key.get_secret_value().encode()
    if not settings.development:
        raise ConfigurationError(["BREAKGLASS_AUDIT_HMAC_KEY must be set in production"])
    # Development only: a key kept next to the embedded Redis data, so `audit verify` works across restarts.
    path = Path(settings.data_dir) / "audit.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def clock_from(settings: Settings) -> Clock:
    if not settings.clock_offset_s and settings.clock_scale == 1.0:
        return SystemClock()
    anchor = datetime.fromtimestamp(settings.clock_anchor, UTC) if settings.clock_anchor is not None else None
    return OffsetClock(timedelta(seconds=settings.clock_offset_s), scale=settings.clock_scale, anchor=anchor)


class Runtime:
    def __init__(self, settings: Settings, *, clock: Clock | None = None, client: redis.Redis | None = None):
        self.settings = settings
        self.clock: Clock = clock or clock_from(settings)
        self._client = client

    @cached_property
    def redis(self) -> redis.Redis:
        return self._client if self._client is not None else connect(self.settings)

    @cached_property
    def store(self) -> RequestStore:
        return RequestStore(self.redis, prefix=self.settings.key_prefix)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.redis, audit_key(self.settings), prefix=self.settings.key_prefix, clock=self.clock,
                        checkpoint_every=self.settings.audit_checkpoint_every)

    @cached_property
    def policies(self) -> PolicySource:
        return PolicySource(self.settings.policy_file)
