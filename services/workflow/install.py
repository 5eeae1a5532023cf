"""Reaching a person who never opened the bot (PROTOCOL_NOTES §9): the bot installs its own Teams app for them
through Graph, finds the 1:1 chat of that installation and remembers it as their personal conversation, so the
approval card (or the requester's notice) goes to them like to anyone else.

1. The org-catalog id of our app, from its manifest id (cached for a day; re-resolved once if an install says 404).
2. Install it for the user: 201 installed, 409 already installed (both fine).
3. The user's installation of our app (checking that its bot is ours), then its chat (Teams may need a few seconds
   to create it: polled with backoff, about 30 s at most).

A refusal (the app permission policy blocks the app for the user, the app is not in the org catalog, a permission
is missing) is audited, raises one alert for an admin and is remembered for `REFUSAL_TTL_S`, so a burst of cards
does not ask Graph again each time; the caller falls back to the channel copy as for anyone unreachable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.clock import Clock
from services.ports import (
    GraphError,
    GraphForbiddenError,
    GraphNotFoundError,
    TeamsAppBlockedError,
    TeamsInstaller,
)
from services.state.audit import AuditLog
from services.state.store import RequestStore
from services.state.teams_users import TeamsUser, TeamsUsers

log = logging.getLogger(__name__)
SYSTEM = "system:notifier"
CATALOG_TTL_S = 86400
REFUSAL_TTL_S = 600
CHAT_WAITS_S = (1.0, 2.0, 4.0, 8.0, 15.0)  # §9.4: no documented delay; 30 s in all, then the channel copy only

BLOCKED = "blocked by the app permission policy"
NOT_IN_CATALOG = "not in the org app catalog"
PERMISSION = "permission missing"
NOT_VISIBLE = ("installed but not visible to this app (the Self permission needs the Graph app to be the manifest's "
               "webApplicationInfo.id)")
FOREIGN = "an app with our manifest id belongs to another bot"


@dataclass(frozen=True)
class NotReached:
    reason: str  # in words, for the audit, the alert and the approval's "unreachable" list
    refused_now: bool = False  # Graph refused just now (not a remembered refusal): an admin should hear of it


class AppInstaller:
    def __init__(self, *, graph: Callable[[], TeamsInstaller], store: RequestStore, audit: AuditLog,
                 clock: Clock, manifest_id: str, bot_id: str | None, tenant_id: str,
                 sleep: Callable[[float], None] = time.sleep, chat_waits: Sequence[float] = CHAT_WAITS_S):
        self._graph = graph  # built on first use: most processes never install anything
        self.store = store
        self.users = TeamsUsers(store)
        self.audit = audit
        self.clock = clock
        self.manifest_id = manifest_id
        self.bot_id = bot_id
        self.tenant_id = tenant_id
        self.sleep = sleep
        self.chat_waits = tuple(chat_waits)

    def reach(self, object_id: str, *, service_url: str, name: str = "",
              request_id: str | None = None) -> TeamsUser | NotReached:
        """The person's personal conversation, installing the app for them first; or why that is not possible."""
        oid = object_id.lower()
        refused = self.store.get_doc("teams-install-refused", oid)
        if refused is not None:
            return NotReached(str(refused.get("reason") or PERMISSION))
        graph = self._graph()
        try:
            outcome = self._install(graph, oid)
            if isinstance(outcome, NotReached):
                return self._refused(oid, name, request_id, outcome)
            installation = graph.app_installation(oid, self.manifest_id)
            if installation is None:
                return self._refused(oid, name, request_id, NotReached(NOT_VISIBLE))
            if self.bot_id and installation.bot_id and installation.bot_id.lower() != self.bot_id.lower():
                return self._refused(oid, name, request_id, NotReached(FOREIGN))
            chat = self._chat(graph, oid, installation.id)
        except GraphForbiddenError:  # reading the installation or its chat needs the install permission too
            return self._refused(oid, name, request_id, NotReached(PERMISSION))
        except GraphError as exc:  # throttled past the retry budget, Graph down: try again next time
            self.audit.append("teams.app_install_failed", actor=SYSTEM, request_id=request_id,
                              data={"user": oid, "name": name, "status": exc.status, "code": exc.code})
            return NotReached(f"could not install the app: Graph {exc.status or 'unreachable'} {exc.code}".strip())
        data = {"user": oid, "name": name, "outcome": outcome, "chat_id": chat}
        self.audit.append("teams.app_installed", actor=SYSTEM, request_id=request_id, data=data)
        if chat is None:
            return NotReached("the app was installed but Teams has not created the chat yet")
        return self.users.remember(TeamsUser(object_id=oid, teams_id="", name=name, service_url=service_url,
                                             tenant_id=self.tenant_id, conversation_id=chat))

    # --- steps -----------------------------------------------------------------------------------------------

    def _catalog_id(self, graph: TeamsInstaller, *, fresh: bool = False) -> str | None:
        cached = None if fresh else self.store.get_doc("teams-app", "catalog")
        if cached is not None and cached.get("manifest_id") == self.manifest_id:
            return str(cached["id"])
        app = graph.catalog_app(self.manifest_id)
        if app is None:
            return None
        self.store.put_doc("teams-app", "catalog", {"manifest_id": self.manifest_id, "id": app.id},
                           ttl_s=CATALOG_TTL_S)
        return app.id

    def _install(self, graph: TeamsInstaller, oid: str) -> str | NotReached:
        try:
            for fresh in (False, True):
                catalog_id = self._catalog_id(graph, fresh=fresh)
                if catalog_id is None:
                    return NotReached(NOT_IN_CATALOG)
                try:
                    return "installed" if graph.install_app(oid, catalog_id) else "already installed"
                except GraphNotFoundError:
                    continue  # a stale catalog id (the app was re-published): resolve it once more
            return NotReached(NOT_IN_CATALOG)
        except TeamsAppBlockedError:
            return NotReached(BLOCKED)
        except GraphForbiddenError:
            return NotReached(PERMISSION)

    def _chat(self, graph: TeamsInstaller, oid: str, installation_id: str) -> str | None:
        for wait in (*self.chat_waits, None):
            chat = graph.installation_chat(oid, installation_id)
            if chat is not None or wait is None:
                return chat
            self.sleep(wait)
        return None

    def _refused(self, oid: str, name: str, request_id: str | None, why: NotReached) -> NotReached:
        self.store.put_doc("teams-install-refused", oid, {"reason": why.reason, "at": self.clock.now().isoformat()},
                           ttl_s=REFUSAL_TTL_S)
        self.audit.append("teams.app_install_refused", actor=SYSTEM, request_id=request_id,
                          data={"user": oid, "name": name, "reason": why.reason})
        log.warning("Teams app could not be installed for a user", extra={"user": oid, "reason": why.reason})
        return NotReached(why.reason, refused_now=True)
