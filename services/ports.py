"""Interfaces the workflow depends on; the Graph and ITSM clients implement them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from policies.model import Principal, TicketFacts
from services.errors import ServiceError


class DirectoryError(ServiceError):
    """The directory (Microsoft Graph) could not be reached or refused the lookup."""


class TicketingUnavailableError(ServiceError):
    """The ticketing system could not be reached or refused the call."""


class Directory(Protocol):
    def principal(self, key: str) -> Principal | None:
        """A user by object id or UPN, with transitive group ids; None when no such user exists."""
        ...

    def group_members(self, group_id: str) -> list[tuple[str, str]]:
        """(object id, display name) of the group's users, nested groups included (access reviews)."""
        ...


class Ticketing(Protocol):
    system: str

    def get_ticket(self, number: str) -> TicketFacts:
        """The ticket's facts; `exists=False` when there is no such ticket."""
        ...

    def add_note(self, ticket: TicketFacts, text: str) -> None: ...

    def attach(self, ticket: TicketFacts, filename: str, content: bytes, content_type: str) -> None: ...

    def open_child_incident(self, parent: TicketFacts | None, short_description: str, description: str) -> str:
        """Open an incident (child of `parent` when given); returns its number."""
        ...

    def open_incident(self, short_description: str, description: str, *, priority: int = 1) -> TicketFacts:
        """Open a standalone incident at P-level `priority` (1 is the most urgent); returns it as ticket facts that
        `add_note` accepts. Text is plain: each adapter encodes it for its system."""
        ...


# --- Microsoft Graph -----------------------------------------------------------------------------------------

class GraphError(ServiceError):
    """A Graph call failed; `code` is Graph's error.code (branch on it, never on the message)."""

    def __init__(self, status: int, code: str, message: str = "", retry_after: float | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"Graph {status} {code}: {message}")


class RoleAssignmentExistsError(GraphError):
    pass


class RoleAssignmentDoesNotExistError(GraphError):
    pass


class ActiveDurationTooShortError(GraphError):
    """PIM refuses to remove an assignment within 5 minutes of its activation."""


class GraphForbiddenError(GraphError):
    pass


class GraphNotFoundError(GraphError):
    pass


class GraphThrottledError(GraphError):
    """429 after the client's own retries ran out."""


class LicenceRequiredError(GraphForbiddenError):
    """The tenant's licence does not cover the call (sign-in logs need Entra ID P1/P2, risk needs P2): 403
    Authentication_RequestFromNonPremiumTenantOrB2CTenant. Asking for more permissions would not help."""


class GraphUnavailableError(GraphError):
    """5xx, timeouts or connection resets after the client's own bounded retries."""


@dataclass(frozen=True)
class ScheduleInstance:
    """An active PIM role assignment (roleAssignmentScheduleInstance); end None means permanent."""

    id: str
    principal_id: str
    role_definition_id: str
    directory_scope_id: str
    start: datetime | None
    end: datetime | None
    assignment_type: str = "Assigned"
    member_type: str = "Direct"
    schedule_id: str | None = None


@dataclass(frozen=True)
class ScheduleRequest:
    id: str
    status: str
    action: str
    principal_id: str
    role_definition_id: str
    directory_scope_id: str
    start: datetime | None = None
    duration: timedelta | None = None
    target_schedule_id: str | None = None


@dataclass(frozen=True)
class DirectAssignment:
    id: str
    principal_id: str
    role_definition_id: str
    directory_scope_id: str


@dataclass(frozen=True)
class GroupScheduleInstance:
    """An active PIM for Groups assignment (privilegedAccessGroupAssignmentScheduleInstance): `access` is member or
    owner; end None means permanent."""

    id: str
    principal_id: str
    group_id: str
    access: str
    start: datetime | None
    end: datetime | None
    assignment_type: str = "assigned"
    member_type: str = "direct"
    schedule_id: str | None = None


class Graph(Protocol):
    """The Microsoft Graph calls breakglass makes (application permissions)."""

    def assign_pim(self, *, principal_id: str, role_id: str, scope: str, start: datetime, duration: timedelta,
                   justification: str, ticket_number: str | None, ticket_system: str | None) -> ScheduleRequest: ...

    def update_pim(self, *, principal_id: str, role_id: str, scope: str, start: datetime, duration: timedelta,
                   justification: str) -> ScheduleRequest:
        """adminUpdate: change the expiration of the existing assignment (extensions, overlapping grants)."""
        ...

    def remove_pim(self, *, principal_id: str, role_id: str, scope: str, justification: str) -> ScheduleRequest: ...

    def instances(self, *, principal_id: str | None = None, role_id: str | None = None) -> list[ScheduleInstance]:
        ...

    def direct_assignments(self, *, principal_id: str | None = None,
                           role_id: str | None = None) -> list[DirectAssignment]: ...

    def create_direct(self, *, principal_id: str, role_id: str, scope: str) -> DirectAssignment: ...

    def delete_direct(self, assignment_id: str) -> None: ...

    # PIM for Groups (PROTOCOL_NOTES §8.4): the same request shape keyed by groupId + accessId.

    def assign_group_pim(self, *, principal_id: str, group_id: str, access: str, start: datetime,
                         duration: timedelta, justification: str, ticket_number: str | None,
                         ticket_system: str | None) -> ScheduleRequest: ...

    def update_group_pim(self, *, principal_id: str, group_id: str, access: str, start: datetime,
                         duration: timedelta, justification: str) -> ScheduleRequest: ...

    def remove_group_pim(self, *, principal_id: str, group_id: str, access: str,
                         justification: str) -> ScheduleRequest: ...

    def group_instances(self, *, group_id: str | None = None,
                        principal_id: str | None = None) -> list[GroupScheduleInstance]:
        """Active PIM group assignments; Graph requires a filter on the group or the principal (or both)."""
        ...

    # Direct membership or ownership (no Entra ID P2): members/$ref and owners/$ref.

    def add_group_member(self, *, group_id: str, principal_id: str, access: str) -> None: ...

    def remove_group_member(self, *, group_id: str, principal_id: str, access: str) -> bool:
        """True if removed, False if Graph had no such member (404)."""
        ...

    def group_member_ids(self, group_id: str, access: str) -> set[str]:
        """Direct members (or owners) of the group, lower-cased object ids."""
        ...

    def group(self, group_id: str) -> dict[str, Any] | None:
        """The group (id, displayName, isAssignableToRole, groupTypes, onPremisesSyncEnabled); None if none."""
        ...

    def group_pim_managed(self, group_id: str) -> bool:
        """Whether PIM for Groups manages the group (onboarded in the portal; there is no onboarding API)."""
        ...


# --- Teams app installation for a user (Graph teamwork, PROTOCOL_NOTES §9) -----------------------------------

class IdentityLogs(Protocol):
    """Sessions, the sign-in and directory audit logs, and user risk (Graph; PROTOCOL_NOTES §8). The logs arrive
    minutes late: an empty answer means "nothing visible yet", never "nothing happened"."""

    def revoke_sign_in_sessions(self, user_id: str) -> None:
        """Invalidate the user's refresh tokens and session cookies now; issued access tokens live on until they
        expire (up to about an hour, or until a CAE resource reacts)."""
        ...

    def sign_ins(self, *, user_id: str, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
        """The user's interactive sign-ins in the window, newest first, every page."""
        ...

    def directory_audits(self, *, initiated_by: str, since: datetime,
                         until: datetime | None = None) -> list[dict[str, Any]]:
        """Directory changes the user initiated in the window, every page."""
        ...

    def risky_user(self, user_id: str) -> dict[str, Any] | None:
        """Identity Protection's row for the user, or None when they were never flagged (Graph's 404)."""
        ...


class TeamsAppBlockedError(GraphForbiddenError):
    """The tenant's app permission policy blocks the app for this user (403 Forbidden / AccessDenied): an admin
    must allow it; trying again will not help."""


@dataclass(frozen=True)
class CatalogApp:
    id: str  # the catalog id (teamsApp.id), used to install
    external_id: str  # the manifest id


@dataclass(frozen=True)
class AppInstallation:
    id: str  # the installation id (opaque)
    catalog_id: str
    bot_id: str | None  # teamsAppDefinition.bot.id: must be our bot, or the app is a foreign one with our id


class TeamsInstaller(Protocol):
    """Install the bot's Teams app for a user and find the 1:1 chat (application permissions
    AppCatalog.Read.All and TeamsAppInstallation.ReadWrite(Self)ForUser.All)."""

    def catalog_app(self, manifest_id: str) -> CatalogApp | None:
        """The org-catalog app with this manifest id; None when it is not published (or not visible)."""
        ...

    def install_app(self, user_id: str, catalog_id: str) -> bool:
        """True if installed now, False if it already was (409). Raises TeamsAppBlockedError,
        GraphForbiddenError (permission missing) or GraphNotFoundError (no such catalog id)."""
        ...

    def app_installation(self, user_id: str, manifest_id: str) -> AppInstallation | None: ...

    def installation_chat(self, user_id: str, installation_id: str) -> str | None:
        """The chat id (19:…@unq.gbl.spaces); None while Teams has not created the chat yet (404)."""
        ...


# --- Teams (Bot Connector REST) ----------------------------------------------------------------------------

class TeamsError(ServiceError):
    def __init__(self, status: int, code: str = "", message: str = ""):
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"Bot Connector {status} {code}: {message}")


class Teams(Protocol):
    """Proactive messaging through the Bot Connector REST API (serviceUrl of the tenant's region)."""

    def send(self, service_url: str, conversation_id: str, activity: dict[str, Any]) -> str:
        """Post an activity to a conversation; returns the new activity id."""
        ...

    def reply(self, service_url: str, conversation_id: str, reply_to_id: str, activity: dict[str, Any]) -> str:
        """Reply within a turn (POST .../activities/{replyToId}); returns the new activity id."""
        ...

    def update(self, service_url: str, conversation_id: str, activity_id: str, activity: dict[str, Any]) -> None: ...

    def members(self, service_url: str, conversation_id: str) -> list[dict[str, Any]]:
        """The roster of a team or chat: TeamsChannelAccount dicts (id, name, aadObjectId, userPrincipalName)."""
        ...

    def create_personal(self, service_url: str, user_id: str, tenant_id: str) -> str:
        """Open (or reopen) the 1:1 chat with a user (Teams id 29:...); returns the conversation id."""
        ...

    def post_to_channel(self, service_url: str, channel_id: str, activity: dict[str, Any],
                        tenant_id: str) -> tuple[str, str]:
        """Start a new thread in a channel; returns (conversation id of the thread, activity id)."""
        ...


# --- runbook webhooks (Azure Automation, Logic Apps, any HTTPS receiver) ---------------------------------------

class RunbookHookError(ServiceError):
    """A webhook delivery failed: `kind` is "timeout", "connection" or "http" (with `status`)."""

    def __init__(self, kind: str, status: int | None = None, message: str = ""):
        self.kind = kind
        self.status = status
        self.message = message
        super().__init__(f"webhook {kind}{f' {status}' if status else ''}{': ' + message if message else ''}")

    @property
    def retryable(self) -> bool:
        """Worth another attempt later: no answer, or an answer that says "not now"."""
        return self.kind in {"timeout", "connection"} or self.status in {408, 425, 429} or (self.status or 0) >= 500


class RunbookHooks(Protocol):
    def deliver(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        """POST `body` once (the caller retries); the 2xx status, or RunbookHookError."""
        ...
