"""Access reviews in Teams: the `report` chat command (approvers see everyone's use, anyone else only their own)
and the scheduled review (policy `reviews: {every, channel}`), which posts the summary card with the CSV to the
channel once per period, however many schedulers or workers there are, and audits that it did."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import redis

from cards.usage import usage_card
from policies.document import PolicyDocument
from services.clock import Clock
from services.ports import Directory, TeamsError
from services.state.audit import AuditLog
from services.state.policy_source import PolicySource
from services.state.store import RequestStore
from services.workflow.notify import Notifier, card_activity
from services.workflow.usage import UsageReport, usage_report

SYSTEM = "system:reviews"
CHAT_PERIOD = timedelta(days=90)


def approvers_of(policy: PolicyDocument) -> set[str]:
    return {p.object_id for g in policy.approver_groups.values() for p in (*g.members, *g.backup)}


def csv_attachment(report: UsageReport, name: str) -> dict[str, Any]:
    """The CSV as a message attachment. Inline (a data: URL): a bot cannot upload a file into a channel without
    SharePoint permissions; `breakglass report --format csv` gives the same file."""
    data = report.to_csv().encode()
    return {"contentType": "text/csv", "name": name,
            "contentUrl": "data:text/csv;base64," + base64.b64encode(data).decode()}


class Reviews:
    def __init__(self, *, audit: AuditLog, store: RequestStore, policies: PolicySource, directory: Directory,
                 notifier: Notifier, clock: Clock, redis_client: redis.Redis, prefix: str):
        self.audit = audit
        self.store = store
        self.policies = policies
        self.directory = directory
        self.notifier = notifier
        self.clock = clock
        self.redis = redis_client
        self.prefix = prefix

    def summary_for(self, object_id: str) -> dict[str, Any]:
        """The `report` command's card: the last 90 days; everyone's lines for an approver, else their own."""
        policy = self.policies.current()
        now = self.clock.now()
        oid = object_id.lower()
        everyone = oid in approvers_of(policy)
        report, _ = usage_report(self.audit, self.store, policy, since=now - CHAT_PERIOD, until=now,
                                 directory=self.directory if everyone else None)
        if not everyone:
            report = report.only(oid)
        self.audit.append("report.viewed", actor=oid, data={"scope": "all" if everyone else "own",
                                                            "lines": len(report.lines)})
        return usage_card(report, title="Access review (last 90 days)" if everyone else "Your use of breakglass",
                          scope="everyone's use" if everyone else "your own use only")

    def post_if_due(self) -> dict[str, Any]:
        """Post the period's review once (the first caller in the period wins a Redis SET NX)."""
        policy = self.policies.current()
        every = policy.reviews.every
        if every is None:
            return {"posted": False, "why": "reviews.every is not set"}
        now = self.clock.now()
        period = int(now.timestamp() // every.total_seconds())
        key = f"{self.prefix}:review:posted:{period}"
        if not self.redis.set(key, now.isoformat(), nx=True, ex=int(every.total_seconds() * 2)):
            return {"posted": False, "why": "already posted this period"}
        report, warnings = usage_report(self.audit, self.store, policy, since=now - every, until=now,
                                        directory=self.directory)
        name = f"breakglass-usage-{now:%Y-%m-%d}.csv"
        attachment = csv_attachment(report, name)
        card = usage_card(report, title=f"Access review: the last {every.days} days")
        activity = card_activity(card, f"breakglass access review: {len(report.flagged())} flagged")
        activity["attachments"].append(attachment)
        channel = self.notifier.channel(policy.reviews.channel)
        try:
            if channel is None:
                raise TeamsError(0, "no_channel", f"no {policy.reviews.channel} channel configured")
            self.notifier.teams.post_to_channel(channel.service_url, channel.channel_id, activity,
                                                channel.tenant_id or self.notifier.channels.tenant_id)
        except TeamsError as exc:
            self.redis.delete(key)  # the next check tries again
            self.audit.append("review.failed", actor=SYSTEM, data={"error": str(exc)[:300]})
            return {"posted": False, "why": str(exc)[:300]}
        csv_bytes = report.to_csv().encode()
        self.audit.append("review.posted", actor=SYSTEM, data={
            "since": report.since.isoformat(), "until": report.until.isoformat(), "channel": policy.reviews.channel,
            "lines": len(report.lines), "flagged": len(report.flagged()), "never_activated": len(report.unused),
            "csv": name, "csv_sha256": hashlib.sha256(csv_bytes).hexdigest(), "warnings": warnings})
        return {"posted": True, "lines": len(report.lines)}
