"""GraphDirectory: principals from Graph, cached in Redis for 60 s, Graph failures as DirectoryError."""

from __future__ import annotations

import pytest
import redis

from services.clients.directory import GraphDirectory
from services.clients.graph import GraphClient
from services.clients.tokens import TokenProvider
from services.emulators import demo_seed
from services.ports import DirectoryError
from services.state.store import RequestStore

from .conftest import FAST, PEOPLE, GraphStack

SAM = PEOPLE["sam"]
IDENTITY_ON_CALL = "11111111-0000-0000-0000-000000000002"


@pytest.fixture
def directory(graph_stack: GraphStack, redis_client: redis.Redis, store: RequestStore) -> GraphDirectory:
    graph = GraphClient(graph_stack.graph_base, TokenProvider.for_graph(graph_stack.settings(), redis_client),
                        retry=FAST)
    return GraphDirectory(graph, store)


def graph_reads(stack: GraphStack) -> int:
    return stack.graph.calls.count(path="/v1.0/users/")


def test_principal_by_upn_with_transitive_groups(directory: GraphDirectory, graph_stack: GraphStack) -> None:
    principal = directory.principal(SAM["upn"].upper())

    assert principal is not None
    assert (principal.object_id, principal.upn, principal.mail, principal.display_name, principal.enabled) == (
        SAM["object_id"], SAM["upn"], SAM["upn"], "Sam Okafor", True)
    assert principal.groups == frozenset({IDENTITY_ON_CALL})
    assert graph_reads(graph_stack) == 2  # the user, then the groups


def test_results_are_cached_for_60_seconds_under_every_name(directory: GraphDirectory, graph_stack: GraphStack,
                                                           store: RequestStore) -> None:
    first = directory.principal(SAM["upn"])
    assert directory.principal(SAM["upn"]) == first
    assert directory.principal(SAM["object_id"]) == first
    assert graph_reads(graph_stack) == 2
    ttl = store.redis.ttl(store.keys.kv("principal", SAM["object_id"]))
    assert 0 < ttl <= 60


def test_unknown_user_is_none_and_cached_briefly(directory: GraphDirectory, graph_stack: GraphStack,
                                                 store: RequestStore) -> None:
    assert directory.principal("nobody@contoso.example") is None
    assert directory.principal("nobody@contoso.example") is None
    assert graph_reads(graph_stack) == 1
    assert 0 < store.redis.ttl(store.keys.kv("principal", "nobody@contoso.example")) <= 15


def test_disabled_account(directory: GraphDirectory, graph_stack: GraphStack) -> None:
    users = demo_seed()["graph"]["users"]
    for user in users:
        if user["id"] == SAM["object_id"]:
            user["accountEnabled"] = False
    graph_stack.graph.set_state({"users": users})
    principal = directory.principal(SAM["object_id"])
    assert principal is not None and principal.enabled is False


def test_graph_failure_is_directory_error(directory: GraphDirectory, graph_stack: GraphStack) -> None:
    graph_stack.graph.add_fault(path="/v1.0/users/", status=503)
    with pytest.raises(DirectoryError) as caught:
        directory.principal(SAM["upn"])
    assert "serviceNotAvailable" in str(caught.value)
