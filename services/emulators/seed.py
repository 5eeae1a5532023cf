"""The demo tenant (Contoso) shared by tests and the product's local dev stack.

``demo_seed()`` returns plain JSON-able dicts, one section per emulator, each in that emulator's
``POST /_emulator/state`` format; ``stack.apply_seed`` hands each section to its emulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .botauth import DEMO_BOT_APP_ID
from .botconnector import personal_conversation_id
from .directory import builtin_role_definitions
from .entra import DEMO_GRAPH_CLIENT_ID, DEMO_TENANT_ID

DOMAIN = "contoso.example"
BOT_ACCOUNT_ID = f"28:{DEMO_BOT_APP_ID}"
APPROVALS_CHANNEL_ID = "19:breakglass-approvals@thread.tacv2"
# The breakglass app as published to the demo tenant's org catalog (ids from graph/teamwork_*.http.json): the
# manifest id (teamsApp.externalId), the catalog id the server generated, and the bot behind it.
TEAMS_APP_MANIFEST_ID = "bbbbbbbb-0000-0000-0000-0000000000e1"
TEAMS_APP_CATALOG_ID = "bbbbbbbb-0000-0000-0000-0000000000c1"


@dataclass(frozen=True)
class Person:
    number: int
    given_name: str | None
    surname: str | None
    display_name: str
    alias: str
    job_title: str
    department: str
    agent: bool = True  # IT staff: agents in the ITSM tools
    # In the Teams team the bot is installed in (so the bot learns them from the roster) and with a 1:1 chat with
    # the bot. False: a person who never opened the bot; only a proactive installation reaches them.
    in_teams: bool = True

    @property
    def object_id(self) -> str:
        return f"cccccccc-0000-0000-0000-{self.number:012d}"

    @property
    def upn(self) -> str:
        return f"{self.alias}@{DOMAIN}"

    @property
    def mri(self) -> str:
        return f"29:{self.alias}"

    @property
    def snow_sys_id(self) -> str:
        return f"bbbbbbbbbbbbbbbbbbbbbbbbbbbb{self.number:04d}"

    @property
    def freshservice_id(self) -> int:
        return 1_000_000_000 + self.number

    @property
    def halo_user_id(self) -> int:
        return 100 + self.number


PEOPLE: tuple[Person, ...] = (
    Person(1, "Riley", "Chen", "Riley Chen", "riley", "IT Administrator", "IT"),
    Person(2, "Dana", "Whitfield", "Dana Whitfield", "dana", "On-call Identity Lead", "Identity Engineering"),
    Person(3, "Sam", "Okafor", "Sam Okafor", "sam", "Identity Engineer", "Identity Engineering"),
    Person(4, "Bo", "Achterberg", "Bo Achterberg", "bo", "Identity Engineering Manager", "Identity Engineering"),
    Person(5, "Jordan", "Reyes", "Jordan Reyes", "jordan", "Security Responder", "Security Operations"),
    Person(6, "Morgan", "Ellis", "Morgan Ellis", "morgan", "SecOps Lead", "Security Operations"),
    Person(7, "Kai", "Lindqvist", "Kai Lindqvist", "kai", "Identity Engineer", "Identity Engineering"),
    Person(8, "Alex", "Novak", "Alex Novak", "alex", "Service Desk Agent", "Service Desk"),
    Person(9, None, None, "Break Glass 01", "breakglass01", "Emergency access account", "IT", agent=False),
    Person(10, None, None, "svc-backup", "svc-backup", "Service account", "IT", agent=False),
    Person(11, "Priya", "Natarajan", "Priya Natarajan", "priya", "Security Lead (joined this week)",
           "Security Operations", in_teams=False),
)
BY_ALIAS = {p.alias: p for p in PEOPLE}

# (Graph object id, ServiceNow/Freshservice name, members by alias)
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("11111111-0000-0000-0000-000000000001", "IT Administrators", ("riley",)),
    ("11111111-0000-0000-0000-000000000002", "Identity On-Call", ("sam", "kai")),
    ("11111111-0000-0000-0000-000000000003", "Security Operations", ("jordan", "morgan")),
    ("11111111-0000-0000-0000-000000000004", "Service Desk", ("alex",)),
)
# Groups granted just in time (group entitlements): (Graph object id, display name, onboarded to PIM for Groups).
# No standing members: membership or ownership comes only from breakglass.
JIT_GROUPS: tuple[tuple[str, str, bool], ...] = (
    ("22222222-0000-0000-0000-000000000001", "Exchange Admins (JIT)", True),
    ("22222222-0000-0000-0000-000000000002", "SharePoint Admins (JIT)", False),
)
# ServiceNow assignment groups: (sys_id, name, members, manager)
SNOW_GROUPS: tuple[tuple[str, str, tuple[str, ...], str | None], ...] = (
    ("eeeeeeeeeeeeeeeeeeeeeeeeeeee0001", "Identity On-Call", ("sam", "kai"), "dana"),
    ("eeeeeeeeeeeeeeeeeeeeeeeeeeee0002", "Security Operations", ("jordan", "morgan"), "morgan"),
    ("eeeeeeeeeeeeeeeeeeeeeeeeeeee0003", "Service Desk", ("alex",), None),
    ("eeeeeeeeeeeeeeeeeeeeeeeeeeee0004", "IT Operations", ("riley",), None),
)
SNOW_INTEGRATION_USER = "svc_breakglass"
SNOW_INTEGRATION_SYS_ID = "bbbbbbbbbbbbbbbbbbbbbbbbbbbb0099"


def _snow_group(name: str) -> str:
    return next(sys_id for sys_id, n, _, _ in SNOW_GROUPS if n == name)


def graph_seed() -> dict[str, Any]:
    users: list[dict[str, Any]] = [
        {
            "id": p.object_id, "displayName": p.display_name, "givenName": p.given_name, "surname": p.surname,
            "userPrincipalName": p.upn, "mail": p.upn, "accountEnabled": True, "jobTitle": p.job_title,
            "department": p.department, "businessPhones": [], "mobilePhone": None, "officeLocation": None,
            "preferredLanguage": "en-US", "userType": "Member",
        }
        for p in PEOPLE
    ]
    groups = [
        {"id": gid, "displayName": name, "description": f"{name} (demo)",
         "mailNickname": name.lower().replace(" ", "-"), "securityEnabled": True, "mailEnabled": False,
         "isAssignableToRole": False, "groupTypes": []}
        for gid, name, _ in GROUPS
    ] + [
        {"id": gid, "displayName": name, "description": f"{name}: membership granted just in time (demo)",
         "mailNickname": name.lower().replace(" ", "-").strip("()"), "securityEnabled": True, "mailEnabled": False,
         "isAssignableToRole": False, "groupTypes": []}
        for gid, name, _ in JIT_GROUPS
    ]
    memberships = {gid: [BY_ALIAS[a].object_id for a in members] for gid, _, members in GROUPS}
    return {"users": users, "groups": groups, "memberships": memberships,
            "pim_groups": [gid for gid, _, onboarded in JIT_GROUPS if onboarded],
            "role_definitions": builtin_role_definitions(), "assignments": [],
            "teams_apps": [teams_app()]}


def teams_app() -> dict[str, Any]:
    """The org-catalog entry; its webApplicationInfo.id is the bot app, as in the shipped manifest."""
    return {"id": TEAMS_APP_CATALOG_ID, "externalId": TEAMS_APP_MANIFEST_ID, "displayName": "Breakglass",
            "distributionMethod": "organization", "botId": DEMO_BOT_APP_ID, "azureADAppId": DEMO_BOT_APP_ID,
            "version": "1.0.0"}


def servicenow_seed() -> dict[str, Any]:
    users = [
        {"sys_id": p.snow_sys_id, "user_name": p.alias, "name": p.display_name, "first_name": p.given_name or "",
         "last_name": p.surname or p.display_name, "email": p.upn, "title": p.job_title, "active": "true"}
        for p in PEOPLE
    ]
    users.append({"sys_id": SNOW_INTEGRATION_SYS_ID, "user_name": SNOW_INTEGRATION_USER,
                  "name": "Breakglass Integration", "first_name": "Breakglass", "last_name": "Integration",
                  "email": f"svc_breakglass@{DOMAIN}", "title": "Integration user", "active": "true"})
    groups = [
        {"sys_id": sys_id, "name": name, "description": f"{name} (demo)",
         "manager": BY_ALIAS[manager].snow_sys_id if manager else "", "active": "true"}
        for sys_id, name, _, manager in SNOW_GROUPS
    ]
    memberships = [
        {"sys_id": f"ffffffffffffffffffffffffffff{gi:02d}{mi:02d}", "group": sys_id, "user": BY_ALIAS[a].snow_sys_id}
        for gi, (sys_id, _, members, _) in enumerate(SNOW_GROUPS, start=1)
        for mi, a in enumerate(members, start=1)
    ]
    open_fields = {"state": "2", "incident_state": "2", "active": "true"}

    def incident(n: int, number: str, impact: str, urgency: str, short: str, caller: str, group: str,
                 **extra: str) -> dict[str, Any]:
        return {
            "sys_id": f"aaaaaaaaaaaaaaaaaaaaaaaaaaaa{n:04d}", "number": number, "impact": impact, "urgency": urgency,
            "short_description": short, "description": f"{short} (demo incident)",
            "caller_id": BY_ALIAS[caller].snow_sys_id, "opened_by": BY_ALIAS[caller].snow_sys_id,
            "assignment_group": _snow_group(group), "category": "software", **open_fields, **extra,
        }

    incidents = [
        incident(1, "INC0012345", "1", "1", "Conditional Access policy misfire locked out all admins", "sam",
                 "Identity On-Call"),
        incident(2, "INC0012346", "1", "1", "Suspected token theft on finance mailbox", "morgan",
                 "Security Operations", assigned_to=BY_ALIAS["jordan"].snow_sys_id,
                 u_affected_user=BY_ALIAS["alex"].snow_sys_id),
        incident(3, "INC0012347", "2", "2", "Password reset for exec assistant", "riley", "IT Operations"),
        incident(4, "INC0012300", "1", "2", "Exchange Online connector outage", "riley", "IT Operations",
                 state="7", incident_state="7", active="false", close_code="Solved (Permanently)",
                 close_notes="Connector certificate renewed.", closed_by=BY_ALIAS["riley"].snow_sys_id),
        incident(5, "INC0012348", "2", "1", "Conditional Access exclusion review", "kai", "Identity On-Call"),
    ]
    return {"users": users, "groups": groups, "memberships": memberships, "incidents": incidents}


FRESHSERVICE_INTEGRATION_AGENT_ID = 1_000_000_099


def freshservice_seed() -> dict[str, Any]:
    requesters = [
        {"id": p.freshservice_id, "first_name": p.given_name or p.display_name, "last_name": p.surname or "",
         "primary_email": p.upn, "secondary_emails": [], "job_title": p.job_title, "active": True,
         "department_ids": [], "is_agent": p.agent}
        for p in PEOPLE
    ]
    agents = [
        {"id": p.freshservice_id, "first_name": p.given_name, "last_name": p.surname, "email": p.upn,
         "job_title": p.job_title, "active": True, "occasional": False}
        for p in PEOPLE if p.agent
    ]
    agents.append({"id": FRESHSERVICE_INTEGRATION_AGENT_ID, "first_name": "Breakglass", "last_name": "Integration",
                   "email": f"svc_breakglass@{DOMAIN}", "job_title": "Integration user", "active": True,
                   "occasional": False})
    groups = [
        {"id": 2_000_000_000 + i, "name": name, "description": f"{name} (demo)",
         "members": [BY_ALIAS[a].freshservice_id for a in members], "observers": [], "leaders": [],
         "escalate_to": None, "unassigned_for": None}
        for i, (_, name, members, _) in enumerate(SNOW_GROUPS, start=1)
    ]
    riley = BY_ALIAS["riley"].freshservice_id
    tickets = [
        {"id": 501, "subject": "Conditional Access policy misfire locked out all admins",
         "description": "<div>All admins are blocked by a CA policy (demo ticket)</div>",
         "priority": 4, "urgency": 3, "impact": 3, "status": 2, "requester_id": riley,
         "group_id": 2_000_000_001, "responder_id": BY_ALIAS["sam"].freshservice_id},
        {"id": 502, "subject": "Exchange Online connector outage",
         "description": "<div>Connector certificate expired (demo ticket)</div>",
         "priority": 2, "urgency": 2, "impact": 2, "status": 5, "requester_id": riley,
         "group_id": 2_000_000_004, "responder_id": riley},
    ]
    return {"requesters": requesters, "agents": agents, "groups": groups, "tickets": tickets,
            "api_agent_id": FRESHSERVICE_INTEGRATION_AGENT_ID}


def halo_seed() -> dict[str, Any]:
    users = [{"id": p.halo_user_id, "name": p.display_name, "emailaddress": p.upn, "client_id": 12, "site_id": 14}
             for p in PEOPLE]
    agents = [{"id": p.number, "name": p.display_name, "email": p.upn} for p in PEOPLE if p.agent]
    riley = BY_ALIAS["riley"]
    tickets = [
        {"id": 5001, "summary": "Conditional Access policy misfire locked out all admins",
         "details": "All admins are blocked by a CA policy (demo ticket)", "status_id": 2, "tickettype_id": 1,
         "client_id": 12, "site_id": 14, "user_id": riley.halo_user_id, "user_name": riley.display_name,
         "agent_id": BY_ALIAS["sam"].number, "team": "Identity On-Call", "priority_id": 1},
        {"id": 5002, "summary": "Exchange Online connector outage",
         "details": "Connector certificate expired (demo ticket)", "status_id": 9, "tickettype_id": 1,
         "client_id": 12, "site_id": 14, "user_id": riley.halo_user_id, "user_name": riley.display_name,
         "agent_id": riley.number, "team": "IT Operations", "priority_id": 2},
    ]
    return {"users": users, "agents": agents, "tickets": tickets}


def botconnector_seed() -> dict[str, Any]:
    members = [
        {"id": p.mri, "name": p.display_name, "aadObjectId": p.object_id, "userPrincipalName": p.upn,
         "email": p.upn, "givenName": p.given_name, "surname": p.surname, "tenantId": DEMO_TENANT_ID,
         "userRole": "user"}
        for p in PEOPLE if p.in_teams
    ]
    conversations: list[dict[str, Any]] = [
        {"id": personal_conversation_id(DEMO_TENANT_ID, p.mri, BOT_ACCOUNT_ID), "conversationType": "personal",
         "members": [p.mri], "tenantId": DEMO_TENANT_ID}
        for p in PEOPLE if p.in_teams
    ]
    conversations.append({"id": APPROVALS_CHANNEL_ID, "conversationType": "channel", "members": [],
                          "tenantId": DEMO_TENANT_ID})
    return {"members": members, "conversations": conversations}


def demo_seed() -> dict[str, Any]:
    """Everything, keyed by emulator name, plus the shared identifiers under ``tenant``."""
    return {
        "tenant": {
            "tenant_id": DEMO_TENANT_ID, "domain": DOMAIN, "bot_app_id": DEMO_BOT_APP_ID,
            "graph_client_id": DEMO_GRAPH_CLIENT_ID, "approvals_channel_id": APPROVALS_CHANNEL_ID,
            "teams_app_manifest_id": TEAMS_APP_MANIFEST_ID, "teams_app_catalog_id": TEAMS_APP_CATALOG_ID,
            "people": [
                {"number": p.number, "object_id": p.object_id, "display_name": p.display_name, "upn": p.upn,
                 "mri": p.mri, "servicenow_sys_id": p.snow_sys_id, "freshservice_id": p.freshservice_id,
                 "halo_user_id": p.halo_user_id, "in_teams": p.in_teams,
                 "personal_conversation_id": personal_conversation_id(DEMO_TENANT_ID, p.mri, BOT_ACCOUNT_ID)}
                for p in PEOPLE
            ],
        },
        "graph": graph_seed(),
        "servicenow": servicenow_seed(),
        "freshservice": freshservice_seed(),
        "halo": halo_seed(),
        "botconnector": botconnector_seed(),
    }
