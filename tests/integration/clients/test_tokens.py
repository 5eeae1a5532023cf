"""TokenProvider: real msal against the https Entra emulator, the shared Redis cache, the stampede lock."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from services.clients.graph import GraphClient
from services.clients.http import AuthError
from services.clients.tokens import TokenProvider, certificate_credential, is_microsoft_host
from services.emulators import make_client_certificate
from services.emulators.entra import DEMO_GRAPH_CLIENT_ID, DEMO_GRAPH_CLIENT_SECRET, DEMO_TENANT_ID, GRAPH_DEFAULT_SCOPE
from services.ports import GraphError, GraphUnavailableError

from .conftest import FAST, PEOPLE, GraphStack
from .workers import graph_jobs

RILEY = PEOPLE["riley"]


def graph_client(stack: GraphStack, provider: TokenProvider) -> GraphClient:
    return GraphClient(stack.graph_base, provider, retry=FAST)


def test_real_msal_token_is_accepted_by_graph_without_instance_discovery(graph_stack: GraphStack,
                                                                         redis_client: redis.Redis) -> None:
    provider = TokenProvider.for_graph(graph_stack.settings(), redis_client)
    user = graph_client(graph_stack, provider).user(RILEY["upn"])

    assert user is not None and user["id"] == RILEY["object_id"]
    entra = graph_stack.entra
    assert entra.token_request_count == 1
    assert entra.calls.count(path="/common/discovery/instance") == 0  # instance_discovery=False for this host
    [token_call] = entra.calls.list(path="/oauth2/v2.0/token")
    assert token_call.path == f"/{DEMO_TENANT_ID}/oauth2/v2.0/token"
    assert (token_call.body["scope"], token_call.body["grant_type"]) == (GRAPH_DEFAULT_SCOPE, "client_credentials")
    [graph_call] = graph_stack.graph.calls.list(path="/v1.0/users/")
    assert graph_call.headers["Authorization"].startswith("Bearer ")


def test_microsoft_hosts_keep_instance_discovery() -> None:
    assert is_microsoft_host("https://login.microsoftonline.com/tenant")
    assert is_microsoft_host("https://login.microsoftonline.us/tenant")
    assert not is_microsoft_host("https://127.0.0.1:8443/tenant")


def test_two_workers_share_one_token_through_redis(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    settings = graph_stack.settings()
    first, second = TokenProvider.for_graph(settings, redis_client), TokenProvider.for_graph(settings, redis_client)
    clients = [graph_client(graph_stack, first), graph_client(graph_stack, second)]

    for i in range(100):
        assert clients[i % 2].user(RILEY["object_id"]) is not None

    assert graph_stack.entra.token_request_count == 1
    assert (first.token_requests, second.token_requests) == (1, 0)
    assert second.shared_cache_hits == 1  # then served from its own memory
    # The second worker never even built an msal application (no OpenID discovery request of its own).
    assert graph_stack.entra.discovery_request_count == 1


def test_the_cache_in_redis_is_encrypted(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    provider = TokenProvider.for_graph(graph_stack.settings(), redis_client)
    token = provider.token()
    blob = redis_client.get(provider.cache_key)
    assert blob and token.encode() not in blob and b"AccessToken" not in blob
    assert 0 < redis_client.ttl(provider.cache_key) <= 24 * 3600


def test_concurrent_cold_start_makes_one_token_request(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    settings = graph_stack.settings()
    providers = [TokenProvider.for_graph(settings, redis_client) for _ in range(8)]
    # A slow token endpoint makes the stampede real: everyone misses the cache at the same moment.
    graph_stack.entra.add_fault(path="/oauth2/v2.0/token", latency_ms=300, times=1)
    barrier = threading.Barrier(len(providers))

    def run(provider: TokenProvider) -> str:
        barrier.wait()
        return provider.token()

    with ThreadPoolExecutor(len(providers)) as pool:
        tokens = list(pool.map(run, providers))

    assert len(set(tokens)) == 1
    assert graph_stack.entra.token_request_count == 1


def test_500_jobs_in_two_processes_need_one_token(graph_stack: GraphStack, redis_client: redis.Redis,
                                                  redis_url: str) -> None:
    config = {"redis_url": redis_url, "client_id": DEMO_GRAPH_CLIENT_ID, "secret": DEMO_GRAPH_CLIENT_SECRET,
              "authority": f"{graph_stack.entra_url}/{DEMO_TENANT_ID}", "scope": GRAPH_DEFAULT_SCOPE,
              "graph_base": graph_stack.graph_base, "user": RILEY["object_id"]}
    start_at = time.time() + 1.5  # after both interpreters have started
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(graph_jobs, [(config, 250, start_at), (config, 250, start_at)])

    assert sum(r["jobs"] for r in results) == 500
    assert graph_stack.entra.token_request_count == 1  # goal: <= 10
    assert sum(r["token_requests"] for r in results) == 1
    assert graph_stack.graph.calls.count(path="/v1.0/users/") == 500


def test_certificate_credential_from_a_pem_file(graph_stack: GraphStack, redis_client: redis.Redis,
                                               tmp_path: Path) -> None:
    cert = make_client_certificate()
    pem = tmp_path / "graph-client.pem"
    pem.write_text(cert.private_key_pem + cert.certificate_pem)
    graph_stack.entra.register_client(DEMO_GRAPH_CLIENT_ID, certificate_pem=cert.certificate_pem)

    assert certificate_credential(pem)["thumbprint"] == cert.sha1_thumbprint_hex
    settings = graph_stack.settings(entra_client_secret=None, entra_client_cert_path=pem)
    user = graph_client(graph_stack, TokenProvider.for_graph(settings, redis_client)).user(RILEY["upn"])

    assert user is not None
    assert graph_stack.entra.issued[-1]["auth"] == "certificate"


def test_a_rejected_secret_is_a_401_graph_error_without_retries(graph_stack: GraphStack,
                                                                redis_client: redis.Redis) -> None:
    wrong = "not-the-secret-" + "x" * 20
    provider = TokenProvider.for_graph(graph_stack.settings(entra_client_secret=wrong), redis_client)

    with pytest.raises(GraphError) as caught:
        graph_client(graph_stack, provider).user(RILEY["upn"])

    assert (caught.value.status, caught.value.code) == (401, "invalid_client")
    assert "AADSTS7000215" in caught.value.message and wrong not in str(caught.value)
    assert graph_stack.entra.token_request_count == 1
    assert graph_stack.graph.calls.count() == 0


def test_entra_outage_is_graph_unavailable(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    graph_stack.entra.add_fault(path="/oauth2/v2.0/token", status=503)
    provider = TokenProvider.for_graph(graph_stack.settings(), redis_client)

    with pytest.raises(GraphUnavailableError) as caught:
        graph_client(graph_stack, provider).user(RILEY["upn"])

    assert caught.value.code == "TokenUnavailable"
    assert graph_stack.entra.calls.count(path="/oauth2/v2.0/token") >= 1  # faults answer before the handler counts
    assert graph_stack.graph.calls.count() == 0


def test_a_token_graph_rejects_is_replaced_once(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    settings = graph_stack.settings()
    client = graph_client(graph_stack, TokenProvider.for_graph(settings, redis_client))
    assert client.user(RILEY["upn"]) is not None
    # The emulators restart with a new signing key (what a dev stack does): the cached token is now invalid.
    graph_stack.entra.signing_secret = graph_stack.graph.signing_secret = "rotated-signing-secret-0123456789abcdef"

    other_worker = graph_client(graph_stack, TokenProvider.for_graph(settings, redis_client))
    assert other_worker.user(RILEY["upn"]) is not None

    assert [c.status for c in graph_stack.graph.calls.list(path="/v1.0/users/")] == [200, 401, 200]
    assert graph_stack.entra.token_request_count == 2
    assert other_worker.http.stats.reauthenticated == 1
    assert client.user(RILEY["upn"]) is not None  # the first worker picks the new token up after its own 401


def test_token_errors_are_auth_errors() -> None:
    provider = TokenProvider(client_id="x", credential="y", authority="https://127.0.0.1:1/tenant",
                             scopes=[GRAPH_DEFAULT_SCOPE], timeout=1)
    with pytest.raises(AuthError) as caught:
        provider.token()
    assert caught.value.transient
