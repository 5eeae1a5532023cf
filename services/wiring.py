"""The object graph both entry points use: build once per process from a Runtime, take what you need.
Clients are created lazily so the bot never opens a Graph token cache it does not use, and vice versa."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property

from policies.model import GrantMode
from services.access import AccessService
from services.activation import GrantService
from services.notify import ChannelConfig, Notifier
from services.ports import Directory, Graph, Teams, Ticketing
from services.queue import JobQueue, abandoned_after_s
from services.receipts import Receipts
from services.reconcile import ForeignAssignmentScan, Reconciler
from services.runtime import Runtime


class Services:
    def __init__(self, runtime: Runtime, *, graph: Graph | None = None, teams: Teams | None = None,
                 ticketing: Ticketing | None = None, directory: Directory | None = None):
        self.runtime = runtime
        self.settings = runtime.settings
        self._graph = graph
        self._teams = teams
        self._ticketing = ticketing
        self._directory = directory

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(self.runtime.redis, clock=self.runtime.clock,
                        abandoned_after_s=abandoned_after_s(self.settings.reconcile_interval_s))

    @cached_property
    def graph(self) -> Graph:
        if self._graph is not None:
            return self._graph
        from services.graph import build_graph
        return build_graph(self.settings, self.runtime.redis)

    @cached_property
    def directory(self) -> Directory:
        if self._directory is not None:
            return self._directory
        from services.directory import GraphDirectory
        return GraphDirectory(self.graph, self.runtime.store)  # type: ignore[arg-type]

    @cached_property
    def ticketing(self) -> Ticketing | None:
        if self._ticketing is not None:
            return self._ticketing
        from services.itsm import build_ticketing
        return build_ticketing(self.settings, self.runtime.redis)

    @cached_property
    def teams(self) -> Teams:
        if self._teams is not None:
            return self._teams
        from services.teams import build_teams
        return build_teams(self.settings, self.runtime.redis)

    @cached_property
    def notifier(self) -> Notifier:
        s = self.settings
        return Notifier(store=self.runtime.store, audit=self.runtime.audit, teams=self.teams,
                        policies=self.runtime.policies, clock=self.runtime.clock,
                        channels=ChannelConfig(tenant_id=s.served_tenant_id, service_url=s.teams_service_url,
                                               approvals_channel_id=s.teams_approvals_channel_id,
                                               alerts_channel_id=s.teams_alerts_channel_id))

    @cached_property
    def access(self) -> AccessService:
        return AccessService(store=self.runtime.store, audit=self.runtime.audit, queue=self.queue,
                             policies=self.runtime.policies, directory=self.directory, ticketing=self.ticketing,
                             clock=self.runtime.clock)

    @cached_property
    def grants(self) -> GrantService:
        return GrantService(store=self.runtime.store, audit=self.runtime.audit, queue=self.queue,
                            policies=self.runtime.policies, graph=self.graph, clock=self.runtime.clock,
                            mode=GrantMode(self.settings.grant_mode),
                            pim_min_active=timedelta(seconds=self.settings.pim_min_active_s),
                            retry_base=timedelta(seconds=self.settings.reconcile_interval_s / 2),
                            ticketing=self.ticketing if self.settings.receipts_policy == "wait" else None)

    @cached_property
    def receipts(self) -> Receipts:
        return Receipts(store=self.runtime.store, audit=self.runtime.audit, queue=self.queue, notifier=self.notifier,
                        ticketing=self.ticketing, clock=self.runtime.clock,
                        max_attempts=self.settings.receipt_max_attempts,
                        backoff_s=self.settings.receipt_backoff_s)

    @cached_property
    def reconciler(self) -> Reconciler:
        return Reconciler(store=self.runtime.store, audit=self.runtime.audit, queue=self.queue,
                          notifier=self.notifier, clock=self.runtime.clock,
                          interval=timedelta(seconds=self.settings.reconcile_interval_s))

    @cached_property
    def foreign_scan(self) -> ForeignAssignmentScan:
        return ForeignAssignmentScan(store=self.runtime.store, audit=self.runtime.audit, graph=self.graph,
                                     policies=self.runtime.policies, notifier=self.notifier,
                                     mode=GrantMode(self.settings.grant_mode),
                                     remove=self.settings.reconcile_foreign == "remove")
