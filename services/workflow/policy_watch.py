"""Policy changes, recorded once per installation however many processes reload the file.

Every process (bot replicas, workers, the scheduler) reloads the policy file on its own. The last policy recorded is
kept in Redis; a process that reloads swaps its new version in with one `SET ... GET`: only the process that gets
back a different version records the change (`policy.changed`, both digests, what got weaker for tier-0 roles) and,
when a tier-0 rule got weaker, queues one alert. A process that reloads later, or skipped an intermediate version,
gets back the version it loaded and records nothing.
"""

from __future__ import annotations

import logging

import redis
from pydantic import ValidationError

from policies.changes import tier0_weakenings
from policies.document import PolicyDocument
from services.state import queue as jobs
from services.state.audit import AuditLog
from services.state.queue import JobQueue, job_id

log = logging.getLogger(__name__)
SYSTEM = "system:policy"


class PolicyWatch:
    def __init__(self, *, redis_client: redis.Redis, prefix: str, audit: AuditLog, queue: JobQueue, source: str):
        self.redis = redis_client
        self.key = f"{prefix}:policy:recorded"
        self.audit = audit
        self.queue = queue
        self.source = source

    def changed(self, previous: PolicyDocument, new: PolicyDocument) -> bool:
        """Record a reload from `previous` to `new`; True when this process was the one to record it."""
        raw = self.redis.set(self.key, new.model_dump_json(), get=True)
        recorded = self._load(raw) or previous
        if recorded.digest() == new.digest():
            return False  # another process recorded this version already
        weakened = tier0_weakenings(recorded, new)
        self.audit.append("policy.changed", actor=SYSTEM, data={
            "file": self.source, "previous_digest": recorded.digest(), "digest": new.digest(),
            "tier0_weakened": weakened})
        if weakened:
            self.queue.enqueue(jobs.POLICY_WEAKENED, recorded.digest(), new.digest(), weakened,
                               jid=job_id("policy-weakened", recorded.digest(), new.digest()))
        return True

    @staticmethod
    def _load(raw: bytes | str | None) -> PolicyDocument | None:
        if not raw:
            return None
        try:
            return PolicyDocument.model_validate_json(raw)
        except ValidationError:
            log.warning("the recorded policy could not be read back; comparing with this process's previous one")
            return None
