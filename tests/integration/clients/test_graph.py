"""GraphClient against the Graph emulator (tokens from the https Entra emulator through real msal)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import redis

from services.clients.graph import GraphClient, build_graph, direct_assignment, schedule_instance, schedule_request
from services.clients.http import RetryPolicy, parse_retry_after, reset_stats, stats_snapshot
from services.clients.tokens import TokenProvider
from services.emulators.fixture_files import body_of
from services.ports import (
    ActiveDurationTooShortError,
    GraphError,
    GraphForbiddenError,
    GraphNotFoundError,
    GraphThrottledError,
    GraphUnavailableError,
    RoleAssignmentDoesNotExistError,
    RoleAssignmentExistsError,
)
from services.state.limiter import RateLimiter

from .conftest import FAST, GA, PEOPLE, USER_ADMIN, GraphStack

RILEY, SAM = PEOPLE["riley"], PEOPLE["sam"]
REQUESTS = "/roleManagement/directory/roleAssignmentScheduleRequests"
INSTANCES = "/roleManagement/directory/roleAssignmentScheduleInstances"
ASSIGNMENTS = "/roleManagement/directory/roleAssignments"


@pytest.fixture
def graph(graph_stack: GraphStack, redis_client: redis.Redis) -> GraphClient:
    return GraphClient(graph_stack.graph_base, TokenProvider.for_graph(graph_stack.settings(), redis_client),
                       retry=FAST)


def assign(graph: GraphClient, principal: str = RILEY["object_id"], minutes: int = 30, ticket: str | None = "INC1"):
    return graph.assign_pim(principal_id=principal, role_id=GA, scope="/", start=datetime.now(UTC),
                            duration=timedelta(minutes=minutes), justification="Fix the CA lockout, INC0012345",
                            ticket_number=ticket, ticket_system="servicenow" if ticket else None)


def posts(stack: GraphStack, path: str = REQUESTS) -> list:
    return stack.graph.calls.list(path=path, method="POST")


# --- PIM -------------------------------------------------------------------------------------------------------

def test_assign_pim_sends_after_duration_and_ticket_info(graph: GraphClient, graph_stack: GraphStack) -> None:
    result = assign(graph)

    [call] = posts(graph_stack)
    body = call.body
    assert (body["action"], body["principalId"], body["roleDefinitionId"], body["directoryScopeId"]) == (
        "adminAssign", RILEY["object_id"], GA, "/")
    assert body["scheduleInfo"]["expiration"] == {"type": "afterDuration", "duration": "PT30M"}
    assert body["scheduleInfo"]["startDateTime"].endswith("Z")
    assert body["ticketInfo"] == {"ticketNumber": "INC1", "ticketSystem": "servicenow"}
    assert (result.status, result.action, result.principal_id, result.duration) == (
        "Provisioned", "adminAssign", RILEY["object_id"], timedelta(minutes=30))
    assert result.start is not None and result.start.tzinfo is not None


def test_instances_filter_is_url_encoded_and_parsed(graph: GraphClient, graph_stack: GraphStack) -> None:
    assign(graph, minutes=90)
    assign(graph, principal=SAM["object_id"])
    sent: list[str] = []
    graph.http.session.hooks["response"].append(lambda response, *args, **kwargs: sent.append(response.request.url))

    [instance] = graph.instances(principal_id=RILEY["object_id"], role_id=GA)

    [url] = sent  # exactly as it went on the wire
    assert url == (f"{graph_stack.graph_base}{INSTANCES}?$filter=principalId%20eq%20'{RILEY['object_id']}'"
                   f"%20and%20roleDefinitionId%20eq%20'{GA}'")
    [call] = graph_stack.graph.calls.list(path=INSTANCES)
    assert call.query["$filter"] == f"principalId eq '{RILEY['object_id']}' and roleDefinitionId eq '{GA}'"
    assert (instance.principal_id, instance.role_definition_id, instance.directory_scope_id) == (
        RILEY["object_id"], GA, "/")
    assert instance.start is not None and instance.end is not None
    assert instance.end - instance.start == timedelta(minutes=90)
    assert instance.schedule_id and instance.id.endswith("-1")
    assert len(graph.instances(role_id=GA)) == 2
    assert graph.instances(principal_id=PEOPLE["dana"]["object_id"]) == []


def test_update_pim_moves_the_end(graph: GraphClient) -> None:
    first = assign(graph, minutes=30)
    assert first.start is not None
    updated = graph.update_pim(principal_id=RILEY["object_id"], role_id=GA, scope="/", start=first.start,
                               duration=timedelta(minutes=45), justification="extension")
    [instance] = graph.instances(principal_id=RILEY["object_id"], role_id=GA)
    assert updated.action == "adminUpdate"
    assert instance.end is not None and instance.start is not None
    assert instance.end - instance.start == timedelta(minutes=45)


def test_remove_pim(graph: GraphClient, graph_stack: GraphStack) -> None:
    assign(graph)
    removed = graph.remove_pim(principal_id=RILEY["object_id"], role_id=GA, scope="/", justification="done")
    assert (removed.status, removed.action, removed.duration) == ("Revoked", "adminRemove", None)
    assert posts(graph_stack)[-1].body == {"action": "adminRemove", "principalId": RILEY["object_id"],
                                           "roleDefinitionId": GA, "directoryScopeId": "/",
                                           "justification": "done"}
    assert graph.instances(principal_id=RILEY["object_id"]) == []


def test_next_links_are_followed_on_the_same_host_only(graph: GraphClient, graph_stack: GraphStack) -> None:
    assign(graph)
    page_one = {"value": [{**body_of("graph/role_assignment_schedule_instances_filter.http.json")["value"][0],
                           "id": "page-one-1"}],
                "@odata.nextLink": f"{graph_stack.graph_base}{INSTANCES}?$skiptoken=abc"}
    graph_stack.graph.add_fault(path=INSTANCES, method="GET", status=200, body=page_one, times=1)

    ids = [i.id for i in graph.instances(role_id=GA)]

    assert ids[0] == "page-one-1" and len(ids) == 2
    assert graph_stack.graph.calls.list(path=INSTANCES)[1].query == {"$skiptoken": "abc"}

    graph_stack.graph.add_fault(path=INSTANCES, method="GET", status=200, times=1, body={
        "value": [], "@odata.nextLink": f"https://graph.example.net/v1.0{INSTANCES}?$skiptoken=x"})
    with pytest.raises(GraphError) as caught:
        graph.instances()
    assert caught.value.code == "UntrustedNextLink"


def test_fixture_envelopes_parse() -> None:
    request = schedule_request(body_of("graph/role_assignment_schedule_request_admin_assign_doc.http.json"))
    assert (request.status, request.duration, request.target_schedule_id) == (
        "Provisioned", None, "95c690fb-3eb3-4942-a03f-4524aed6f31e")
    assert request.start == datetime(2022, 4, 11, 11, 50, 5, 999934, tzinfo=UTC)
    removal = schedule_request(body_of("graph/role_assignment_schedule_request_admin_remove.http.json"))
    assert (removal.status, removal.start, removal.duration) == ("Revoked", None, None)
    instance = schedule_instance(body_of("graph/role_assignment_schedule_instances_filter.http.json")["value"][0])
    assert instance.end == datetime(2025, 6, 1, 10, 35, 32, 765432, tzinfo=UTC)
    assert instance.schedule_id == "eeeeeeee-0000-0000-0000-000000000001"
    created = direct_assignment(body_of("graph/role_assignment_create_doc.http.json"))
    assert created.id == "YUb1sHQtUEyvox7IA_Eu_mm3jqnUe4lEhvatluHVi2I-1"


# --- direct role assignments -----------------------------------------------------------------------------------

def test_direct_assignment_crud(graph: GraphClient, graph_stack: GraphStack) -> None:
    created = graph.create_direct(principal_id=SAM["object_id"], role_id=USER_ADMIN, scope="/")
    assert posts(graph_stack, ASSIGNMENTS)[0].body == {
        "@odata.type": "#microsoft.graph.unifiedRoleAssignment", "principalId": SAM["object_id"],
        "roleDefinitionId": USER_ADMIN, "directoryScopeId": "/"}
    assert graph.direct_assignments(principal_id=SAM["object_id"], role_id=USER_ADMIN) == [created]
    with pytest.raises(RoleAssignmentExistsError):
        graph.create_direct(principal_id=SAM["object_id"], role_id=USER_ADMIN, scope="/")

    graph.delete_direct(created.id)

    assert graph.direct_assignments(principal_id=SAM["object_id"]) == []
    with pytest.raises(GraphNotFoundError) as caught:
        graph.delete_direct(created.id)
    assert (caught.value.status, caught.value.code) == (404, "Request_ResourceNotFound")


# --- directory reads -------------------------------------------------------------------------------------------

def test_user_and_transitive_groups(graph: GraphClient, graph_stack: GraphStack) -> None:
    by_upn = graph.user(SAM["upn"])
    assert by_upn == {"id": SAM["object_id"], "displayName": "Sam Okafor", "userPrincipalName": SAM["upn"],
                      "mail": SAM["upn"], "accountEnabled": True}
    assert graph.user(SAM["object_id"]) == by_upn
    assert graph.user("nobody@contoso.example") is None
    assert graph.user_group_ids(SAM["object_id"]) == {"11111111-0000-0000-0000-000000000002"}
    [groups_call] = graph_stack.graph.calls.list(path="/transitiveMemberOf/microsoft.graph.group")
    assert groups_call.headers["ConsistencyLevel"] == "eventual"


# --- errors, by error.code -------------------------------------------------------------------------------------

def test_typed_pim_errors(graph: GraphClient, graph_stack: GraphStack) -> None:
    with pytest.raises(RoleAssignmentDoesNotExistError) as missing:
        graph.remove_pim(principal_id=RILEY["object_id"], role_id=GA, scope="/", justification="x")
    assert (missing.value.status, missing.value.code) == (400, "RoleAssignmentDoesNotExist")
    assign(graph)
    with pytest.raises(RoleAssignmentExistsError):
        assign(graph)
    graph_stack.graph.set_state({"min_active_seconds": 300})
    with pytest.raises(ActiveDurationTooShortError) as too_short:
        graph.remove_pim(principal_id=RILEY["object_id"], role_id=GA, scope="/", justification="x")
    assert too_short.value.code == "ActiveDurationTooShort"
    with pytest.raises(GraphError) as unknown_role:
        graph.assign_pim(principal_id=RILEY["object_id"], role_id="00000000-0000-0000-0000-000000000000", scope="/",
                         start=datetime.now(UTC), duration=timedelta(minutes=5), justification="x",
                         ticket_number=None, ticket_system=None)
    assert type(unknown_role.value) is GraphError and unknown_role.value.code == "RoleNotFound"
    assert len(posts(graph_stack)) == 5  # none of these 4xx were retried


def test_forbidden(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    graph_stack.entra.register_client(graph_stack.settings().entra_client_id, secret="secret-without-roles",
                                      roles=[])
    graph_stack.graph.set_state({"enforce_roles": True})
    graph = GraphClient(graph_stack.graph_base, TokenProvider.for_graph(
        graph_stack.settings(entra_client_secret="secret-without-roles"), redis_client), retry=FAST)
    with pytest.raises(GraphForbiddenError) as caught:
        assign(graph)
    assert (caught.value.status, caught.value.code) == (403, "Authorization_RequestDenied")


def test_retry_after_is_honoured(graph: GraphClient, graph_stack: GraphStack) -> None:
    graph.user(RILEY["upn"])  # token first, so only the throttled call is timed
    graph_stack.graph.add_fault(path=REQUESTS, method="POST", status=429, headers={"Retry-After": "1.5"}, times=1)

    assert assign(graph).status == "Provisioned"

    first, second = posts(graph_stack)
    assert (first.status, second.status) == (429, 201)
    assert second.monotonic - first.monotonic >= 1.5
    assert graph.http.stats.throttled == 1 and graph.http.stats.waited_s >= 1.5


def test_a_retry_after_holds_every_writer_sharing_the_limiter(graph_stack: GraphStack,
                                                            redis_client: redis.Redis) -> None:
    """Throttling is per app and tenant: once one worker is told to wait, another worker's write waits too,
    instead of arriving before the Retry-After (and being throttled in turn)."""
    told_to_wait = threading.Event()

    def waiting(seconds: float) -> None:
        told_to_wait.set()
        time.sleep(seconds)

    def writer(**kwargs) -> GraphClient:
        return GraphClient(graph_stack.graph_base, TokenProvider.for_graph(graph_stack.settings(), redis_client),
                           retry=FAST, limiter=RateLimiter(redis_client, "bgt:ratelimit:graph-writes", rate=100,
                                                           burst=10), **kwargs)
    first, second = writer(sleep=waiting), writer()
    second.user(RILEY["upn"])  # token first, so only the writes are timed
    graph_stack.graph.add_fault(path=REQUESTS, method="POST", status=429, headers={"Retry-After": "0.8"}, times=1)
    throttled = threading.Thread(target=assign, args=(first,))
    throttled.start()
    assert told_to_wait.wait(10)  # the first writer has its 429 and waits out the Retry-After
    assign(second, principal=SAM["object_id"])
    throttled.join(10)
    calls = posts(graph_stack)
    assert [c.status for c in calls] == [429, 201, 201]
    assert min(c.monotonic for c in calls[1:]) - calls[0].monotonic >= 0.8


def test_retry_after_beyond_the_budget_gives_up_at_once(graph: GraphClient, graph_stack: GraphStack) -> None:
    graph_stack.graph.add_fault(path=REQUESTS, method="POST", status=429, headers={"Retry-After": "120"})
    started = time.monotonic()
    with pytest.raises(GraphThrottledError) as caught:
        assign(graph)
    assert time.monotonic() - started < 1.0
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (429, "TooManyRequests", 120.0)
    assert len(posts(graph_stack)) == 1


def test_throttling_that_never_ends_is_graph_throttled(graph: GraphClient, graph_stack: GraphStack) -> None:
    graph_stack.graph.add_fault(path=REQUESTS, method="POST", status=429, headers={"Retry-After": "0.01"})
    with pytest.raises(GraphThrottledError) as caught:
        assign(graph)
    assert caught.value.retry_after == pytest.approx(0.01)
    assert len(posts(graph_stack)) == FAST.max_attempts


def test_5xx_is_retried_then_unavailable(graph: GraphClient, graph_stack: GraphStack) -> None:
    graph_stack.graph.add_fault(path=REQUESTS, method="POST", status=503, times=1)
    assert assign(graph).status == "Provisioned"
    assert [c.status for c in posts(graph_stack)] == [503, 201]

    graph_stack.graph.add_fault(path=INSTANCES, status=503)
    with pytest.raises(GraphUnavailableError) as caught:
        graph.instances()
    assert (caught.value.status, caught.value.code) == (503, "serviceNotAvailable")
    assert graph_stack.graph.calls.count(path=INSTANCES) == FAST.max_attempts


def test_connection_drops_are_retried_then_unavailable(graph: GraphClient, graph_stack: GraphStack) -> None:
    graph.user(RILEY["upn"])
    graph_stack.graph.add_fault(path=REQUESTS, method="POST", drop=True, times=1)
    assert assign(graph).status == "Provisioned"
    assert [c.status for c in posts(graph_stack)] == [None, 201]

    graph_stack.graph.add_fault(path="/v1.0/users/", drop=True)
    with pytest.raises(GraphUnavailableError) as caught:
        graph.user(SAM["upn"])
    assert (caught.value.status, caught.value.code) == (0, "Connection")
    assert graph_stack.graph.calls.count(path=f"/v1.0/users/{SAM['upn']}") == FAST.max_attempts


def test_timeouts_are_retried_then_unavailable(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    graph = GraphClient(graph_stack.graph_base, TokenProvider.for_graph(graph_stack.settings(), redis_client),
                        retry=RetryPolicy(max_attempts=2, backoff_base_s=0.01), timeout=0.3)
    graph.user(RILEY["upn"])
    graph_stack.graph.add_fault(path=INSTANCES, latency_ms=1000)
    with pytest.raises(GraphUnavailableError) as caught:
        graph.instances()
    assert caught.value.code == "Timeout"


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert parse_retry_after("2.128") == 2.128
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


# --- the shared write limiter ----------------------------------------------------------------------------------

def test_writes_pass_the_shared_limiter_so_graph_does_not_throttle(graph_stack: GraphStack,
                                                                   redis_client: redis.Redis) -> None:
    graph_stack.graph.set_state({"write_rate_limit": 20, "write_burst": 1})
    settings = graph_stack.settings(graph_write_rate=10)  # half of Graph's limit: room for network jitter
    limiter = RateLimiter(redis_client, "bgt:ratelimit:graph-writes", settings.graph_write_rate, step_s=0.01)
    graph = GraphClient(graph_stack.graph_base, TokenProvider.for_graph(settings, redis_client), limiter=limiter,
                        retry=FAST)
    people = [p["object_id"] for p in PEOPLE.values()][:6]

    started = time.monotonic()
    for principal in people:
        graph.create_direct(principal_id=principal, role_id=USER_ADMIN, scope="/")
    assert graph.instances(role_id=USER_ADMIN)  # reads are not limited

    assert graph_stack.graph.state()["throttled_count"] == 0
    assert time.monotonic() - started >= 5 / 10 - 0.01
    assert graph.http.stats.limiter_wait_s > 0


def test_without_the_limiter_graph_throttles_and_retry_after_saves_the_day(graph: GraphClient,
                                                                           graph_stack: GraphStack) -> None:
    graph_stack.graph.set_state({"write_rate_limit": 20, "write_burst": 1})
    for p in list(PEOPLE.values())[:4]:
        graph.create_direct(principal_id=p["object_id"], role_id=USER_ADMIN, scope="/")
    assert graph_stack.graph.state()["throttled_count"] > 0
    assert len(graph.direct_assignments(role_id=USER_ADMIN)) == 4


def test_build_graph_wires_settings(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    graph = build_graph(graph_stack.settings(graph_base_url=graph_stack.graph_base + "/",
                                             graph_write_rate=7, http_max_attempts=2), redis_client)
    assert graph.user(RILEY["upn"]) is not None  # a trailing slash in GRAPH_BASE_URL is fine
    assert graph.http.limiter is not None and graph.http.limiter.rate == 7
    assert graph.http.limiter.key == "bgt:ratelimit:graph-writes"
    assert graph.http.retry.max_attempts == 2


def test_a_404_that_is_not_graphs_not_found_is_an_error(graph_stack: GraphStack, redis_client: redis.Redis) -> None:
    wrong_base = GraphClient(graph_stack.graph_url + "/beta-typo", TokenProvider.for_graph(graph_stack.settings(),
                                                                                         redis_client), retry=FAST)
    graph_stack.graph.add_fault(path="/beta-typo/", status=404, body="Not Found")
    with pytest.raises(GraphNotFoundError) as caught:
        wrong_base.user(RILEY["upn"])
    assert "check GRAPH_BASE_URL" in caught.value.message
    assert graph_stack.graph.calls.list(path="/beta-typo/")[0].status == 404


def test_call_counters(graph: GraphClient, graph_stack: GraphStack) -> None:
    reset_stats()
    graph_stack.graph.add_fault(path="/v1.0/users/", status=503, times=1)
    graph.user(RILEY["upn"])
    graph.user("nobody@contoso.example")
    stats = graph.http.stats
    assert (stats.requests, stats.sends, stats.retries, stats.failures) == (2, 3, 1, 0)
    assert dict(stats.statuses) == {503: 1, 200: 1, 404: 1}
    assert stats_snapshot()["graph"]["sends"] == 3
