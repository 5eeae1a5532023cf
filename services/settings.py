"""Configuration from the environment (and an optional .env file), validated once per process.

Production is the default: a process that is missing credentials refuses to start (fail closed). Only
`BREAKGLASS_ENV=development` relaxes that, and only for loopback-bound local use.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(Exception):
    """Settings are missing or inconsistent; `problems` lists each one in words."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("configuration problems:\n" + "\n".join(f"  - {p}" for p in problems))


TicketKind = Literal["incident", "change", "request", "service_request", "other"]
_INCIDENT: TicketKind = "incident"


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def is_loopback(host: str) -> bool:
    if host in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      populate_by_name=True, case_sensitive=False)

    env: Literal["production", "development"] = Field("production", validation_alias=_env("BREAKGLASS_ENV"))
    data_dir: Path = Field(Path(".state"), validation_alias=_env("BREAKGLASS_DATA_DIR"))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    key_prefix: str = Field("bg", validation_alias=_env("BREAKGLASS_KEY_PREFIX"))
    policy_file: Path | None = Field(None, validation_alias=_env("BREAKGLASS_POLICY_FILE"))
    audit_hmac_key: SecretStr | None = Field(None, validation_alias=_env("BREAKGLASS_AUDIT_HMAC_KEY"))
    audit_checkpoint_every: int = Field(100, ge=1, validation_alias=_env("BREAKGLASS_AUDIT_CHECKPOINT_EVERY"))
    # Signed checkpoints appended outside Redis (a file Redis's attacker cannot rewrite); `audit verify` checks them.
    audit_anchor_file: Path | None = Field(None, validation_alias=_env("BREAKGLASS_AUDIT_ANCHOR_FILE"))
    # Development/demo only: run the product as if it were this many seconds later (e.g. "Monday 10:00").
    clock_offset_s: float = Field(0.0, validation_alias=_env("BREAKGLASS_CLOCK_OFFSET"))
    # ...and, for demos, this many times faster than real time, counted from a real instant every process shares.
    clock_scale: float = Field(1.0, ge=1.0, le=3600.0, validation_alias=_env("BREAKGLASS_CLOCK_SCALE"))
    clock_anchor: float | None = Field(None, validation_alias=_env("BREAKGLASS_CLOCK_ANCHOR"))
    log_level: str = Field("INFO", validation_alias=_env("BREAKGLASS_LOG_LEVEL"))
    log_format: Literal["json", "text"] = Field("json", validation_alias=_env("BREAKGLASS_LOG_FORMAT"))

    # Bot Framework (names as botbuilder documents them)
    app_id: str = Field("", validation_alias=_env("MicrosoftAppId", "MICROSOFT_APP_ID"))
    app_password: SecretStr = Field(SecretStr(""), validation_alias=_env("MicrosoftAppPassword",
                                                                         "MICROSOFT_APP_PASSWORD"))
    app_tenant_id: str = Field("", validation_alias=_env("MicrosoftAppTenantId", "MICROSOFT_APP_TENANT_ID"))
    app_type: Literal["SingleTenant", "MultiTenant", "UserAssignedMSI"] = Field(
        "SingleTenant", validation_alias=_env("MicrosoftAppType", "MICROSOFT_APP_TYPE"))
    host: str = Field("127.0.0.1", validation_alias=_env("BREAKGLASS_HOST"))
    port: int = Field(3978, ge=0, le=65535, validation_alias=_env("BREAKGLASS_PORT", "PORT"))
    # /metrics and /readyz tell how many people hold elevated roles right now: they are served on their own
    # listener, loopback by default, never on the public one. Port 0 picks a free port (tests, dev stacks).
    metrics_host: str = Field("127.0.0.1", validation_alias=_env("BREAKGLASS_METRICS_HOST"))
    metrics_port: int = Field(9464, ge=0, le=65535, validation_alias=_env("BREAKGLASS_METRICS_PORT"))
    public_base_url: str | None = Field(None, validation_alias=_env("BREAKGLASS_PUBLIC_URL"))
    # The manifest's privacyUrl / termsOfUseUrl: the operator's own pages, or (unset) the bot's /privacy and /terms,
    # whose text comes from privacy.txt / terms.txt in BREAKGLASS_LEGAL_DIR (else the shipped default text).
    privacy_url: str | None = Field(None, validation_alias=_env("BREAKGLASS_PRIVACY_URL"))
    terms_url: str | None = Field(None, validation_alias=_env("BREAKGLASS_TERMS_URL"))
    legal_dir: Path | None = Field(None, validation_alias=_env("BREAKGLASS_LEGAL_DIR"))
    max_body_bytes: int = Field(256 * 1024, ge=1024, validation_alias=_env("BREAKGLASS_MAX_BODY_BYTES"))
    # Per person: chat messages, form submits and card clicks (Teams' own card refreshes are not counted). A burst,
    # then this many a minute; 0 turns the limit off.
    user_rate_per_min: float = Field(30.0, ge=0, le=6000, validation_alias=_env("BREAKGLASS_USER_RATE"))
    user_burst: int = Field(20, ge=1, le=1000, validation_alias=_env("BREAKGLASS_USER_BURST"))
    # Bot Framework OpenID metadata override: only for tests against a local JWKS (see PROTOCOL_NOTES §1).
    bot_openid_metadata_url: str | None = Field(None, validation_alias=_env("BREAKGLASS_BOT_OPENID_METADATA_URL"))
    teams_service_url: str = Field("https://smba.trafficmanager.net/emea/",
                                   validation_alias=_env("TEAMS_SERVICE_URL"))
    teams_approvals_channel_id: str | None = Field(None, validation_alias=_env("TEAMS_APPROVALS_CHANNEL_ID"))
    teams_alerts_channel_id: str | None = Field(None, validation_alias=_env("TEAMS_ALERTS_CHANNEL_ID"))
    # Reaching people who never opened the bot: install the app for them through Graph (PROTOCOL_NOTES §9).
    teams_proactive_install: bool = Field(True, validation_alias=_env("BREAKGLASS_TEAMS_PROACTIVE_INSTALL"))
    teams_app_manifest_id: str = Field("", validation_alias=_env("TEAMS_APP_MANIFEST_ID"))

    # Entra ID + Microsoft Graph (application permissions, client credentials)
    entra_authority_host: str = Field("https://login.microsoftonline.com",
                                      validation_alias=_env("ENTRA_AUTHORITY_HOST"))
    entra_tenant_id: str = Field("", validation_alias=_env("ENTRA_TENANT_ID"))
    entra_client_id: str = Field("", validation_alias=_env("ENTRA_CLIENT_ID"))
    entra_client_secret: SecretStr | None = Field(None, validation_alias=_env("ENTRA_CLIENT_SECRET"))
    entra_client_cert_path: Path | None = Field(None, validation_alias=_env("ENTRA_CLIENT_CERT_PATH"))
    graph_base_url: str = Field("https://graph.microsoft.com/v1.0", validation_alias=_env("GRAPH_BASE_URL"))
    graph_scope: str = Field("https://graph.microsoft.com/.default", validation_alias=_env("GRAPH_SCOPE"))
    grant_mode: Literal["pim", "direct"] = Field("pim", validation_alias=_env("BREAKGLASS_GRANT_MODE"))
    graph_write_rate: float = Field(15.0, gt=0, validation_alias=_env("BREAKGLASS_GRAPH_WRITE_RATE"))
    graph_timeout_s: float = Field(15.0, gt=0, validation_alias=_env("BREAKGLASS_GRAPH_TIMEOUT"))
    # Burst of the shared write limiter (1 = evenly spaced writes) and how long a write may wait for its slot.
    graph_write_burst: int = Field(1, ge=1, le=100, validation_alias=_env("BREAKGLASS_GRAPH_WRITE_BURST"))
    graph_write_wait_s: float = Field(30.0, gt=0, le=600, validation_alias=_env("BREAKGLASS_GRAPH_WRITE_WAIT"))

    # Outbound HTTP (Graph, ITSM, Bot Connector): bounded retries for 429/5xx/connection errors.
    http_max_attempts: int = Field(5, ge=1, le=10, validation_alias=_env("BREAKGLASS_HTTP_MAX_ATTEMPTS"))
    http_retry_budget_s: float = Field(60.0, gt=0, le=600, validation_alias=_env("BREAKGLASS_HTTP_RETRY_BUDGET"))
    teams_timeout_s: float = Field(15.0, gt=0, le=120, validation_alias=_env("BREAKGLASS_TEAMS_TIMEOUT"))

    # Ticketing
    itsm: Literal["none", "servicenow", "freshservice", "halo"] = Field("none", validation_alias=_env(
        "BREAKGLASS_ITSM"))
    servicenow_instance_url: str | None = Field(None, validation_alias=_env("SERVICENOW_INSTANCE_URL"))
    servicenow_username: str | None = Field(None, validation_alias=_env("SERVICENOW_USERNAME"))
    servicenow_password: SecretStr | None = Field(None, validation_alias=_env("SERVICENOW_PASSWORD"))
    freshservice_url: str | None = Field(None, validation_alias=_env("FRESHSERVICE_URL"))
    freshservice_api_key: SecretStr | None = Field(None, validation_alias=_env("FRESHSERVICE_API_KEY"))
    halo_url: str | None = Field(None, validation_alias=_env("HALO_URL"))
    halo_client_id: str | None = Field(None, validation_alias=_env("HALO_CLIENT_ID"))
    halo_client_secret: SecretStr | None = Field(None, validation_alias=_env("HALO_CLIENT_SECRET"))
    halo_tenant: str | None = Field(None, validation_alias=_env("HALO_TENANT"))
    # Halo ids differ per instance: priority id -> P-level (1 = most urgent), closed status ids, ticket type ids.
    halo_priority_map: dict[int, int] = Field(default_factory=lambda: {1: 1, 2: 2, 3: 3, 4: 4},
                                              validation_alias=_env("HALO_PRIORITY_MAP"))
    halo_closed_status_ids: list[int] = Field(default_factory=lambda: [9],
                                              validation_alias=_env("HALO_CLOSED_STATUS_IDS"))
    halo_ticket_types: dict[int, TicketKind] = Field(default_factory=lambda: {1: _INCIDENT},
                                                     validation_alias=_env("HALO_TICKET_TYPES"))
    # Requester of Freshservice tickets breakglass opens (integration-failure incidents); else the parent's caller.
    freshservice_requester_email: str | None = Field(None, validation_alias=_env("FRESHSERVICE_REQUESTER_EMAIL"))
    itsm_timeout_s: float = Field(10.0, gt=0, le=120, validation_alias=_env("BREAKGLASS_ITSM_TIMEOUT"))
    itsm_webhook_secret: SecretStr | None = Field(None, validation_alias=_env("BREAKGLASS_ITSM_WEBHOOK_SECRET"))
    itsm_webhook_max_skew_s: int = Field(300, ge=10, le=3600, validation_alias=_env(
        "BREAKGLASS_ITSM_WEBHOOK_MAX_SKEW"))
    # The ticket field naming the account an incident is about (ServiceNow: a reference to sys_user such as
    # u_affected_user, or caller_id); a runbook `revoke_sessions` step for `affected_account` acts on it.
    itsm_affected_field: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,80}$",
                                            validation_alias=_env("BREAKGLASS_ITSM_AFFECTED_FIELD"))
    # Runbook webhooks: endpoint name (as the policy's runbooks name it) -> URL. A secret: Azure Automation and Logic
    # Apps URLs carry the receiver's token. Every delivery is HMAC-signed with the webhook secret.
    runbook_webhooks: dict[str, SecretStr] = Field(default_factory=dict,
                                                   validation_alias=_env("BREAKGLASS_RUNBOOK_WEBHOOKS"))
    runbook_webhook_secret: SecretStr | None = Field(None, validation_alias=_env("BREAKGLASS_RUNBOOK_WEBHOOK_SECRET"))
    # When the ticketing system is down: "proceed" grants now and delivers receipts later; "wait" holds the grant.
    receipts_policy: Literal["proceed", "wait"] = Field("proceed", validation_alias=_env(
        "BREAKGLASS_RECEIPTS_POLICY"))

    # Triage (prefill only)
    triage_provider: Literal["rules", "openai", "none"] = Field("rules", validation_alias=_env(
        "BREAKGLASS_TRIAGE"))
    triage_base_url: str | None = Field(None, validation_alias=_env("TRIAGE_BASE_URL"))
    triage_api_key: SecretStr | None = Field(None, validation_alias=_env("TRIAGE_API_KEY"))
    triage_deployment: str | None = Field(None, validation_alias=_env("TRIAGE_DEPLOYMENT"))
    triage_api_version: str = Field("2024-10-21", validation_alias=_env("TRIAGE_API_VERSION"))
    triage_timeout_s: float = Field(4.0, gt=0, le=30, validation_alias=_env("TRIAGE_TIMEOUT"))

    # Jobs
    scheduler_interval_s: float = Field(1.0, gt=0, le=60, validation_alias=_env("BREAKGLASS_SCHEDULER_INTERVAL"))
    reconcile_interval_s: int = Field(30, ge=1, le=3600, validation_alias=_env("BREAKGLASS_RECONCILE_INTERVAL"))
    reconcile_foreign: Literal["report", "remove"] = Field("report", validation_alias=_env(
        "BREAKGLASS_RECONCILE_FOREIGN"))
    # 7 attempts: the retries then span the ~15 minutes the back-off below promises (the 7th is 940 s after the first).
    receipt_max_attempts: int = Field(7, ge=1, le=20, validation_alias=_env("BREAKGLASS_RECEIPT_ATTEMPTS"))
    # First receipt retry delay; later ones grow (x3, x6, x12, ... capped at 60x), about 15 minutes in all by default.
    receipt_backoff_s: float = Field(10.0, gt=0, le=600, validation_alias=_env("BREAKGLASS_RECEIPT_BACKOFF"))
    pim_min_active_s: int = Field(300, ge=0, le=3600, validation_alias=_env("BREAKGLASS_PIM_MIN_ACTIVE"))
    # The emergency-account watch: how often it reads the sign-in logs (0: off, which /readyz and doctor report
    # while the policy lists emergency accounts), and how far back past its last poll (Entra's logs arrive late).
    watch_interval_s: int = Field(60, ge=0, le=3600, validation_alias=_env("BREAKGLASS_WATCH_INTERVAL"))
    watch_lookback_s: int = Field(900, ge=60, le=7 * 86400, validation_alias=_env("BREAKGLASS_WATCH_LOOKBACK"))

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def auth_disabled(self) -> bool:
        """Bot auth is off only in development with no app id, and then only on loopback (checked at serve)."""
        return self.development and not self.app_id

    @property
    def teams_manifest_id(self) -> str:
        """The Teams app's manifest id (teamsApp.externalId); `manifest build` writes MicrosoftAppId there."""
        return self.teams_app_manifest_id or self.app_id

    @property
    def served_tenant_id(self) -> str:
        return self.app_tenant_id or self.entra_tenant_id

    def problems_for_bot(self) -> list[str]:
        problems: list[str] = []
        if self.auth_disabled:
            if not is_loopback(self.host):
                problems.append(f"bot authentication is disabled (no MicrosoftAppId) but BREAKGLASS_HOST={self.host}"
                                " is not a loopback address; auth-disabled mode is for local development only")
        else:
            if not self.app_id:
                problems.append("MicrosoftAppId is not set (botbuilder would silently disable authentication)")
            if not self.app_password.get_secret_value() and self.app_type != "UserAssignedMSI":
                problems.append("MicrosoftAppPassword is not set")
            if self.app_type == "SingleTenant" and not self.app_tenant_id:
                problems.append("MicrosoftAppTenantId is not set (required for a SingleTenant bot)")
        if not self.served_tenant_id:
            problems.append("no tenant configured: set MicrosoftAppTenantId (or ENTRA_TENANT_ID)")
        problems.extend(self._problems_channels())
        problems.extend(self._problems_common())
        return problems

    def _problems_channels(self) -> list[str]:
        # Never learned in production: whoever installed the bot first would otherwise receive every approval card,
        # receipt and alert.
        if not self.development and not self.teams_approvals_channel_id:
            return ["TEAMS_APPROVALS_CHANNEL_ID is not set (required in production: approval cards, receipts and "
                    "alerts go to this channel, and it is never learned from an install)"]
        return []

    def problems_for_graph(self) -> list[str]:
        problems: list[str] = []
        if not self.entra_tenant_id:
            problems.append("ENTRA_TENANT_ID is not set")
        if not self.entra_client_id:
            problems.append("ENTRA_CLIENT_ID is not set")
        has_secret = self.entra_client_secret is not None and self.entra_client_secret.get_secret_value()
        if not has_secret and self.entra_client_cert_path is None:
            problems.append("neither ENTRA_CLIENT_SECRET nor ENTRA_CLIENT_CERT_PATH is set")
        if self.entra_client_cert_path is not None and not self.entra_client_cert_path.exists():
            problems.append(f"ENTRA_CLIENT_CERT_PATH {self.entra_client_cert_path} does not exist")
        if urlparse(self.entra_authority_host).scheme != "https":
            problems.append("ENTRA_AUTHORITY_HOST must be https (msal refuses anything else)")
        problems.extend(self._problems_itsm())
        problems.extend(self._problems_channels())
        problems.extend(self._problems_common())
        return problems

    def _problems_itsm(self) -> list[str]:
        problems = []
        if self.itsm == "servicenow" and not (self.servicenow_instance_url and self.servicenow_username
                                              and self.servicenow_password):
            problems.append("BREAKGLASS_ITSM=servicenow needs SERVICENOW_INSTANCE_URL, SERVICENOW_USERNAME and "
                            "SERVICENOW_PASSWORD")
        if self.itsm == "freshservice" and not (self.freshservice_url and self.freshservice_api_key):
            problems.append("BREAKGLASS_ITSM=freshservice needs FRESHSERVICE_URL and FRESHSERVICE_API_KEY")
        if self.itsm == "halo" and not (self.halo_url and self.halo_client_id and self.halo_client_secret):
            problems.append("BREAKGLASS_ITSM=halo needs HALO_URL, HALO_CLIENT_ID and HALO_CLIENT_SECRET")
        return problems

    def _problems_common(self) -> list[str]:
        problems = []
        if (self.clock_offset_s or self.clock_scale != 1.0) and not self.development:
            problems.append("BREAKGLASS_CLOCK_OFFSET and BREAKGLASS_CLOCK_SCALE are for development and demos only")
        if self.clock_scale != 1.0 and self.clock_anchor is None:
            problems.append("BREAKGLASS_CLOCK_SCALE needs BREAKGLASS_CLOCK_ANCHOR (unix seconds, shared by all "
                            "processes)")
        if not self.development and (self.audit_hmac_key is None or len(self.audit_hmac_key.get_secret_value()) < 32):
            problems.append("BREAKGLASS_AUDIT_HMAC_KEY must be set to at least 32 characters in production")
        problems.extend(self._problems_runbooks())
        return problems

    def _problems_runbooks(self) -> list[str]:
        if not self.runbook_webhooks:
            return []
        problems = []
        secret = self.runbook_webhook_secret.get_secret_value() if self.runbook_webhook_secret else ""
        if len(secret) < 32:
            problems.append("BREAKGLASS_RUNBOOK_WEBHOOKS is set: BREAKGLASS_RUNBOOK_WEBHOOK_SECRET must be at least 32 "
                            "characters (every delivery is HMAC-signed with it)")
        for name, url in sorted(self.runbook_webhooks.items()):
            parts = urlparse(url.get_secret_value())
            local = self.development and parts.scheme == "http" and is_loopback(parts.hostname or "")
            if parts.scheme != "https" and not local:
                problems.append(f"BREAKGLASS_RUNBOOK_WEBHOOKS[{name}] must be an https URL (plain http only to a "
                                "loopback address in development)")
        return problems

    def require(self, *, bot: bool = False, graph: bool = False) -> None:
        problems: list[str] = []
        if bot:
            problems += self.problems_for_bot()
        if graph:
            problems += self.problems_for_graph()
        if not bot and not graph:
            problems += self._problems_common()
        if problems:
            raise ConfigurationError(list(dict.fromkeys(problems)))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
