"""The composition root: the one place that reads settings and builds the object graph, once per process.

Two layers, built in this order by every entry point (bot/, jobs/, the CLI):
- `Runtime`: per-process infrastructure: settings, the clock, the Redis client, the request store, the audit log
  and the current policy. Cheap; the CLI's `audit` and `policy` commands need nothing more.
- `Services`: the workflow built on a Runtime (access, grants, receipts, reconciler, notifier) and the clients of
  the outside world. Clients are created lazily, so the bot never opens a Graph token cache it does not use, and
  vice versa. Tests pass fakes of the ports in; nothing else reads the environment.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import redis

from policies.document import PolicyDocument
from policies.model import GrantMode
from services.clock import Clock, OffsetClock, SystemClock
from services.ports import Directory, Graph, IdentityLogs, RunbookHooks, Teams, Ticketing
from services.settings import ConfigurationError, Settings
from services.state.anchors import AnchorFile
from services.state.audit import AuditLog
from services.state.emergency import EmergencyStore
from services.state.policy_source import PolicyListener, PolicySource
from services.state.queue import JobQueue, abandoned_after_s
from services.state.redis_conn import connect
from services.state.store import RequestStore
from services.workflow.access import AccessService
from services.workflow.activation import GrantService
from services.workflow.emergency.checklist import Checklist
from services.workflow.emergency.watch import EmergencyWatch
from services.workflow.followup import FollowUps, WebhookConfig
from services.workflow.install import AppInstaller
from services.workflow.notify import ChannelConfig, Notifier
from services.workflow.policy_watch import PolicyWatch
from services.workflow.receipts import Receipts
from services.workflow.reconcile import ForeignAssignmentScan, Reconciler
from services.workflow.review import Reviews

log = logging.getLogger(__name__)


def audit_key(settings: Settings) -> bytes:
    if settings.audit_hmac_key is not None and settings.audit_hmac_key.get_secret_value():
        return settings.audit_hmac_key.get_secret_value().encode()
    if not settings.development:
        raise ConfigurationError(["BREAKGLASS_AUDIT_HMAC_KEY must be set in production"])
    # Development only: a key kept next to the embedded Redis data, so `audit verify` works across restarts.
    path = Path(settings.data_dir) / "audit.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def clock_from(settings: Settings) -> Clock:
    if not settings.clock_offset_s and settings.clock_scale == 1.0:
        return SystemClock()
    anchor = datetime.fromtimestamp(settings.clock_anchor, UTC) if settings.clock_anchor is not None else None
    return OffsetClock(timedelta(seconds=settings.clock_offset_s), scale=settings.clock_scale, anchor=anchor)


class Runtime:
    """Per-process infrastructure: settings, clock, Redis, store, audit log, policy."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, client: redis.Redis | None = None):
        self.settings = settings
        self.clock: Clock = clock or clock_from(settings)
        self._client = client
        # Told of every reload that changed the policy; Services adds the one that records it.
        self.policy_listeners: list[PolicyListener] = []

    @cached_property
    def redis(self) -> redis.Redis:
        return self._client if self._client is not None else connect(self.settings)

    @cached_property
    def store(self) -> RequestStore:
        return RequestStore(self.redis, prefix=self.settings.key_prefix,
                            work_grace=timedelta(seconds=self.settings.reconcile_interval_s / 10))

    @cached_property
    def audit(self) -> AuditLog:
        anchor = AnchorFile(self.settings.audit_anchor_file) if self.settings.audit_anchor_file else None
        return AuditLog(self.redis, audit_key(self.settings), prefix=self.settings.key_prefix, clock=self.clock,
                        checkpoint_every=self.settings.audit_checkpoint_every, anchor=anchor)

    @cached_property
    def policies(self) -> PolicySource:
        return PolicySource(self.settings.policy_file, listeners=self.policy_listeners)

class Services:
    """The workflow and the clients, built on a Runtime."""

    def __init__(self, runtime: Runtime, *, graph: Graph | None = None, teams: Teams | None = None,
                 ticketing: Ticketing | None = None, directory: Directory | None = None,
                 hooks: RunbookHooks | None = None):
        self.runtime = runtime
        self.settings = runtime.settings
        self._hooks = hooks
        self._graph = graph
        self._teams = teams
        self._ticketing = ticketing
        self._directory = directory
        runtime.policy_listeners.append(self._policy_changed)

    def _policy_changed(self, previous: PolicyDocument, new: PolicyDocument) -> None:
        self.policy_watch.changed(previous, new)

    @cached_property
    def policy_watch(self) -> PolicyWatch:
        return PolicyWatch(redis_client=self.runtime.redis, prefix=self.settings.key_prefix, audit=self.runtime.audit,
                           queue=self.queue, source=str(self.runtime.policies.path))

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(self.runtime.redis, clock=self.runtime.clock,
                        abandoned_after_s=abandoned_after_s(self.settings.reconcile_interval_s))

    @cached_property
    def graph(self) -> Graph:
        if self._graph is not None:
            return self._graph
        from services.clients.graph import build_graph
        return build_graph(self.settings, self.runtime.redis)

    @cached_property
    def directory(self) -> Directory:
        if self._directory is not None:
            return self._directory
        from services.clients.directory import GraphDirectory
        return GraphDirectory(self.graph, self.runtime.store)  # type: ignore[arg-type]

    @cached_property
    def ticketing(self) -> Ticketing | None:
        if self._ticketing is not None:
            return self._ticketing
        from services.clients.itsm import build_ticketing
        return build_ticketing(self.settings, self.runtime.redis)

    @cached_property
    def teams(self) -> Teams:
        if self._teams is not None:
            return self._teams
        from services.clients.teams import build_teams
        return build_teams(self.settings, self.runtime.redis)

    @cached_property
    def identity_logs(self) -> IdentityLogs:
        """Sessions, sign-in and directory audit logs, user risk: the same Graph client, another port."""
        return self.graph  # type: ignore[return-value]

    @cached_property
    def app_installer(self) -> AppInstaller | None:
        s = self.settings
        if not (s.teams_proactive_install and s.teams_manifest_id):
            return None
        # The Graph client is built on first use: the bot process reaches nobody new until a card must go out.
        return AppInstaller(graph=lambda: self.graph, store=self.runtime.store,  # type: ignore[arg-type,return-value]
                            audit=self.runtime.audit, clock=self.runtime.clock, manifest_id=s.teams_manifest_id,
                            bot_id=s.app_id or None, tenant_id=s.served_tenant_id)

    @cached_property
    def notifier(self) -> Notifier:
        s = self.settings
        return Notifier(store=self.runtime.store, audit=self.runtime.audit, teams=self.teams,
                        policies=self.runtime.policies, clock=self.runtime.clock,
                        channels=ChannelConfig(tenant_id=s.served_tenant_id, service_url=s.teams_service_url,
                                               approvals_channel_id=s.teams_approvals_channel_id,
                                               alerts_channel_id=s.teams_alerts_channel_id),
                        installer=self.app_installer)

    @cached_property
    def access(self) -> AccessService:
        return AccessService(store=self.runtime.store, audit=self.runtime.audit, queue=self.queue,
                             policies=self.runtime.policies, directory=self.directory, ticketing=self.ticketing,
                             clock=self.runtime.clock, identity_logs=self.identity_logs)

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
                          interval=timedelta(seconds=self.settings.reconcile_interval_s), followups=self.followups)

    @cached_property
    def hooks(self) -> RunbookHooks:
        if self._hooks is not None:
            return self._hooks
        from services.clients.runbook_hooks import RunbookWebhookClient
        return RunbookWebhookClient()

    @cached_property
    def followups(self) -> FollowUps:
        s = self.settings
        webhooks = WebhookConfig(
            endpoints={name: url.get_secret_value() for name, url in s.runbook_webhooks.items()},
            secret=s.runbook_webhook_secret.get_secret_value().encode() if s.runbook_webhook_secret else None)
        # Clients are reached lazily: planning a step needs none of them.
        return FollowUps(store=self.runtime.store, audit=self.runtime.audit, queue=self.queue,
                         policies=self.runtime.policies, clock=self.runtime.clock,
                         identity_logs=lambda: self.identity_logs, graph=lambda: self.graph, notifier=self.notifier,
                         hooks=lambda: self.hooks, webhooks=webhooks, ticketing=self.ticketing is not None,
                         mode=GrantMode(s.grant_mode), interval=timedelta(seconds=s.reconcile_interval_s),
                         retry_base=timedelta(seconds=s.reconcile_interval_s / 2))

    @cached_property
    def foreign_scan(self) -> ForeignAssignmentScan:
        return ForeignAssignmentScan(store=self.runtime.store, audit=self.runtime.audit, graph=self.graph,
                                     policies=self.runtime.policies, notifier=self.notifier,
                                     mode=GrantMode(self.settings.grant_mode),
                                     remove=self.settings.reconcile_foreign == "remove")

    @cached_property
    def emergency_store(self) -> EmergencyStore:
        return EmergencyStore(self.runtime.redis, prefix=self.settings.key_prefix)

    @cached_property
    def emergency_watch(self) -> EmergencyWatch:
        return EmergencyWatch(store=self.emergency_store, audit=self.runtime.audit, policies=self.runtime.policies,
                              logs=self.identity_logs, directory=self.directory, ticketing=self.ticketing,
                              notifier=self.notifier, clock=self.runtime.clock,
                              lookback=timedelta(seconds=self.settings.watch_lookback_s),
                              interval_s=self.settings.watch_interval_s)

    @cached_property
    def emergency_checklist(self) -> Checklist:
        return Checklist(store=self.emergency_store, audit=self.runtime.audit, policies=self.runtime.policies,
                         directory=self.directory, queue=self.queue, clock=self.runtime.clock)

    @cached_property
    def reviews(self) -> Reviews:
        return Reviews(audit=self.runtime.audit, store=self.runtime.store, policies=self.runtime.policies,
                       directory=self.directory, notifier=self.notifier, clock=self.runtime.clock,
                       redis_client=self.runtime.redis, prefix=self.settings.key_prefix)
