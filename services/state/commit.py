"""One round trip for a state change and everything that must go with it.

Where Redis is across a network every round trip on the approve path is paid in full, and the click used to make
one each for the record's compare-and-set, its audit event and its job. A `Commit` does all three in one Lua
script, all or nothing: the record is replaced only if it is still the bytes that were read, the event is appended
only if the log still ends where it was read (the event's hash chains onto that end), and then every other write
(index entries, the job's hash and queue push, as RQ itself would write them) is applied. A lost race on either
check writes nothing; the caller reads again and retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

# KEYS: [record, audit events, audit sealed count, then one key per op]
# ARGV: [expected record bytes, expected audit length ('' = no event), op count, then per op: command, n, args...]
# Returns 0 when the record changed, -1 when the log grew, else the plain list's length after the append (1 without
# an event), which tells the appender when to seal.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local len = redis.call('LLEN', KEYS[2])
if ARGV[2] ~= '' then
  local sealed = tonumber(redis.call('GET', KEYS[3]) or '0')
  if sealed + len ~= tonumber(ARGV[2]) then return -1 end
end
local a = 4
local k = 4
for i = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[a + 1])
  local args = {}
  for j = 1, n do args[j] = ARGV[a + 1 + j] end
  redis.call(ARGV[a], KEYS[k], unpack(args))
  k = k + 1
  a = a + 2 + n
end
if ARGV[2] ~= '' then return len + 1 end
return 1
"""

CONFLICT = 0
LOG_MOVED = -1


@dataclass
class Ops:
    """Writes, each a command on one key, to be applied by a Commit in this order."""

    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    count: int = 0

    def add(self, command: str, key: str, *args: Any) -> Ops:
        self.keys.append(key)
        self.args += [command, len(args), *args]
        self.count += 1
        return self

    def extend(self, other: Ops) -> Ops:
        self.keys += other.keys
        self.args += other.args
        self.count += other.count
        return self

    # The call shapes RequestStore._index uses on a pipeline, so the same code fills either.
    def sadd(self, key: str, member: str) -> None:
        self.add("SADD", key, member)

    def srem(self, key: str, member: str) -> None:
        self.add("SREM", key, member)

    def zrem(self, key: str, member: str) -> None:
        self.add("ZREM", key, member)

    def zadd(self, key: str, mapping: dict[str, float]) -> None:
        for member, score in mapping.items():
            self.add("ZADD", key, repr(float(score)), member)


def pipeline_ops(client: redis.Redis, fill: Callable[[Any], None]) -> Ops:
    """The writes `fill` queues on a pipeline, as Ops (the pipeline itself never runs): RQ's own enqueue, unchanged,
    becomes part of a Commit."""
    ops = Ops()
    pipe = client.pipeline(transaction=False)
    try:
        fill(pipe)
        for args, _options in pipe.command_stack:
            ops.add(str(args[0]), str(args[1]), *args[2:])
    finally:
        pipe.reset()
    return ops


class Committer:
    def __init__(self, client: redis.Redis, *, events_key: str, sealed_key: str):
        self.events_key = events_key
        self.sealed_key = sealed_key
        self._script = client.register_script(_COMMIT)

    def run(self, record_key: str, expected: bytes, expected_seq: int | None, ops: Ops) -> int:
        """CONFLICT, LOG_MOVED, or the log's plain length after the append (1 without an event)."""
        keys = [record_key, self.events_key, self.sealed_key, *ops.keys]
        args = [expected, "" if expected_seq is None else expected_seq, ops.count, *ops.args]
        return int(self._script(keys=keys, args=args))
