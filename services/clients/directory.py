"""The directory port over Microsoft Graph: users with their transitive groups, cached briefly in Redis.

Eligibility depends on group membership, so the cache is short (60 s): long enough that one request's intake
(card, submit, decision) reads Graph once, short enough that a removal from a group takes effect within a minute.
A "no such user" answer is cached for less, so a freshly created account is found soon.
"""

from __future__ import annotations

from typing import Any, Protocol

from policies.model import Principal
from services.ports import DirectoryError, GraphError
from services.state.store import RequestStore

CACHE_KIND = "principal"


class _GraphReads(Protocol):
    def user(self, id_or_upn: str) -> dict[str, Any] | None: ...

    def user_group_ids(self, user_id: str) -> set[str]: ...

    def group_members(self, group_id: str) -> list[dict[str, Any]]: ...


class GraphDirectory:
    def __init__(self, graph: _GraphReads, store: RequestStore, *, ttl_s: int = 60, missing_ttl_s: int = 15):
        self.graph = graph
        self.store = store
        self.ttl_s = ttl_s
        self.missing_ttl_s = missing_ttl_s

    def principal(self, key: str) -> Principal | None:
        cache_key = key.strip().lower()
        if not cache_key:
            return None
        cached = self.store.get_doc(CACHE_KIND, cache_key)
        if cached is not None:
            return None if cached.get("missing") else Principal.model_validate(cached["principal"])
        try:
            user = self.graph.user(cache_key)
            if user is None or not user.get("id"):
                self.store.put_doc(CACHE_KIND, cache_key, {"missing": True}, ttl_s=self.missing_ttl_s)
                return None
            groups = self.graph.user_group_ids(str(user["id"]))
        except GraphError as exc:
            raise DirectoryError(f"directory lookup failed: {exc.code} (HTTP {exc.status})") from exc
        principal = Principal(
            object_id=str(user["id"]), upn=str(user.get("userPrincipalName") or ""), mail=str(user.get("mail") or ""),
            display_name=str(user.get("displayName") or ""), groups=frozenset(groups),
            # Fail closed: an account whose state Graph did not report is treated as disabled.
            enabled=user.get("accountEnabled") is True,
        )
        doc = {"principal": principal.model_dump(mode="json")}
        for alias in {cache_key, principal.object_id, principal.upn.lower()} - {""}:
            self.store.put_doc(CACHE_KIND, alias, doc, ttl_s=self.ttl_s)
        return principal

    def group_members(self, group_id: str) -> list[tuple[str, str]]:
        try:
            rows = self.graph.group_members(group_id)
        except GraphError as exc:
            raise DirectoryError(f"group members lookup failed: {exc.code} (HTTP {exc.status})") from exc
        return [(str(r["id"]).lower(), str(r.get("displayName") or "")) for r in rows if r.get("id")]
