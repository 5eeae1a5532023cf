"""Redis state of the emergency-account watch: incidents (compare-and-set), which sign-in belongs to which incident,
each account's open incident and poll mark, the incidents with work left, the watch's health, and its lock.

One sign-in id maps to one incident, written in the same transaction as the incident that takes it: a restart, a
second scheduler replica or the same record read twice finds the mapping and opens nothing new.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from redis.exceptions import WatchError

from policies.emergency import EmergencyIncident, SignIn
from services.errors import ConflictError, NotFoundError

ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
SIGN_IN_TTL_S = 40 * 86400  # longer than Entra keeps sign-in logs (30 days): an old record cannot come back
IGNORED = "ignored"
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def new_incident_id() -> str:
    return "EA-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(6))


class EmergencyStore:
    def __init__(self, client: redis.Redis, prefix: str = "bg"):
        self.redis = client
        self.p = f"{prefix}:emergency"
        self._unlock = client.register_script(_UNLOCK)

    def _incident(self, incident_id: str) -> str:
        return f"{self.p}:incident:{incident_id}"

    def _sign_in(self, sign_in_id: str) -> str:
        return f"{self.p}:signin:{sign_in_id}"

    def _open(self, account: str) -> str:
        return f"{self.p}:open:{account.lower()}"

    @property
    def _unfinished(self) -> str:
        return f"{self.p}:unfinished"

    # --- the poll lock: one poll at a time across scheduler replicas and workers ------------------------------

    def lock(self, ttl_s: float) -> str | None:
        token = secrets.token_hex(8)
        return token if self.redis.set(f"{self.p}:lock", token, nx=True, px=int(ttl_s * 1000)) else None

    def unlock(self, token: str) -> None:
        self._unlock(keys=[f"{self.p}:lock"], args=[token])

    # --- incidents -------------------------------------------------------------------------------------------

    def get(self, incident_id: str) -> EmergencyIncident | None:
        raw = self.redis.get(self._incident(incident_id))
        return EmergencyIncident.model_validate_json(raw) if raw is not None else None

    def incident_of(self, sign_in_id: str) -> str | None:
        raw = self.redis.get(self._sign_in(sign_in_id))
        return raw.decode() if raw is not None else None

    def open_incident_of(self, account: str) -> str | None:
        raw = self.redis.get(self._open(account))
        return raw.decode() if raw is not None else None

    def create(self, incident: EmergencyIncident) -> bool:
        """Store a new incident with its (one) sign-in; False when that sign-in already has an incident."""
        [sign_in] = incident.sign_ins
        key = self._sign_in(sign_in.id)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.exists(key):
                    return False
                pipe.multi()
                pipe.set(self._incident(incident.id), incident.model_dump_json(), nx=True)
                pipe.set(key, incident.id, ex=SIGN_IN_TTL_S)
                pipe.set(self._open(incident.account), incident.id)
                pipe.sadd(self._unfinished, incident.id)
                pipe.execute()
                return True
            except WatchError:
                return False

    def join(self, incident_id: str, sign_in: SignIn) -> EmergencyIncident | None:
        """Add a sign-in to an incident and map it there, in one transaction; None when the sign-in already
        belongs to an incident."""
        mapping = self._sign_in(sign_in.id)

        def extra(pipe: Any) -> None:
            pipe.set(mapping, incident_id, ex=SIGN_IN_TTL_S)
            pipe.sadd(self._unfinished, incident_id)

        try:
            return self.update(incident_id, lambda i: i.with_sign_in(sign_in), watch=[mapping],
                               precondition=lambda pipe: not pipe.exists(mapping), also=extra)
        except _PreconditionFailed:
            return None

    def ignore(self, sign_in_id: str) -> bool:
        """Remember a sign-in the policy does not alert on (a failed one); True the first time."""
        return bool(self.redis.set(self._sign_in(sign_in_id), IGNORED, nx=True, ex=SIGN_IN_TTL_S))

    def update(self, incident_id: str, change: Callable[[EmergencyIncident], EmergencyIncident], *,
               watch: list[str] | None = None, precondition: Callable[[Any], bool] | None = None,
               also: Callable[[Any], None] | None = None) -> EmergencyIncident:
        """Compare-and-set: `change` runs again on fresh data if the incident changed meanwhile; returning it
        unchanged writes nothing."""
        key = self._incident(incident_id)
        with self.redis.pipeline() as pipe:
            for _ in range(50):
                try:
                    pipe.watch(key, *(watch or []))
                    raw = pipe.get(key)
                    if raw is None:
                        raise NotFoundError(f"no emergency incident {incident_id}")
                    if precondition is not None and not precondition(pipe):
                        raise _PreconditionFailed
                    old = EmergencyIncident.model_validate_json(raw)
                    new = change(old)
                    if new == old:
                        pipe.reset()
                        return old
                    pipe.multi()
                    pipe.set(key, new.model_dump_json())
                    if also is not None:
                        also(pipe)
                    pipe.execute()
                    return new
                except WatchError:
                    continue
        raise ConflictError(f"emergency incident {incident_id} kept changing")

    def unfinished(self) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(self._unfinished))

    def finish(self, incident: EmergencyIncident) -> None:
        """Nothing is left to do for it: no more re-drives, and a later sign-in opens a new incident."""
        with self.redis.pipeline() as pipe:
            pipe.srem(self._unfinished, incident.id)
            pipe.execute()
        self._unlock(keys=[self._open(incident.account)], args=[incident.id])

    # --- each account's poll mark, and the watch's health ---------------------------------------------------

    def polled_until(self, account: str) -> datetime | None:
        raw = self.redis.get(f"{self.p}:polled:{account.lower()}")
        return datetime.fromisoformat(raw.decode()) if raw is not None else None

    def mark_polled(self, account: str, until: datetime, newest: datetime | None) -> None:
        with self.redis.pipeline() as pipe:
            pipe.set(f"{self.p}:polled:{account.lower()}", until.isoformat())
            if newest is not None:
                pipe.set(f"{self.p}:hwm:{account.lower()}", newest.isoformat())
            pipe.execute()

    def high_water_mark(self, account: str) -> datetime | None:
        raw = self.redis.get(f"{self.p}:hwm:{account.lower()}")
        return datetime.fromisoformat(raw.decode()) if raw is not None else None

    def status(self) -> dict[str, Any]:
        raw = self.redis.get(f"{self.p}:status")
        return json.loads(raw) if raw is not None else {}

    def put_status(self, status: dict[str, Any]) -> None:
        self.redis.set(f"{self.p}:status", json.dumps(status, sort_keys=True))


class _PreconditionFailed(Exception):
    pass
