"""The floor's other half, as its own process (like a worker): BLPOP a message, POST once to the Graph emulator
(the same endpoint a grant uses, validation-only so it changes nothing), report both timings back.

    python -m bench.floor_consumer REDIS_URL GRAPH_BASE_URL TOKEN PRINCIPAL_ID
"""

from __future__ import annotations

import json
import sys
import time

import redis
import requests

QUEUE = "bench:floor:in"
ACKS = "bench:floor:out"
ROLE = "194ae4cb-b126-40b2-bd5b-6091b380977d"


def main(argv: list[str]) -> int:
    redis_url, graph, token, principal_id = argv
    client = redis.Redis.from_url(redis_url, socket_timeout=None)  # redis-py 8 defaults to 5 s: BLPOP waits
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    url = graph.rstrip("/") + "/roleManagement/directory/roleAssignmentScheduleRequests"
    body = json.dumps({"action": "adminAssign", "principalId": principal_id, "roleDefinitionId": ROLE,
                       "directoryScopeId": "/", "justification": "bench floor", "isValidationOnly": True,
                       "scheduleInfo": {"expiration": {"type": "afterDuration", "duration": "PT30S"}}})
    client.lpush(ACKS, json.dumps({"ready": True}))
    while True:
        _, raw = client.blpop([QUEUE])
        popped = time.time()
        message = json.loads(raw)
        if message.get("stop"):
            return 0
        began = time.perf_counter()
        response = session.post(url, data=body, timeout=10)
        post_s = time.perf_counter() - began
        client.lpush(ACKS, json.dumps({"seq": message["seq"], "popped": popped, "post_s": post_s,
                                       "status": response.status_code}))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
