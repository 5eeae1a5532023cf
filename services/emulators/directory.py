"""The directory half of the Graph emulator: users, groups, (nested) memberships and role definitions."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

# Graph returns these when a user is read without $select (user-get.md "default properties").
USER_DEFAULT_PROPERTIES = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)
USER_EXTRA_PROPERTIES = ("accountEnabled", "userType", "department", "employeeId", "onPremisesSyncEnabled")

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
SECURITY_ADMINISTRATOR = "194ae4cb-b126-40b2-bd5b-6091b380977d"
CONDITIONAL_ACCESS_ADMINISTRATOR = "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9"
USER_ADMINISTRATOR = "fe930be7-5e62-47db-91af-98c3a49a38b1"
HELPDESK_ADMINISTRATOR = "729827e3-9c14-49f7-bb1b-9608f156bbb8"

_BUILTIN_ROLES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        GLOBAL_ADMINISTRATOR, "Global Administrator",
        "Can manage all aspects of Microsoft Entra ID and Microsoft services that use Microsoft Entra identities.",
        (
            "microsoft.directory/users/allProperties/allTasks",
            "microsoft.directory/roleAssignments/allProperties/allTasks",
            "microsoft.office365.webPortal/allEntities/standard/read",
        ),
    ),
    (
        SECURITY_ADMINISTRATOR, "Security Administrator",
        "Can read security information and reports, and manage configuration in Microsoft Entra ID and Office 365.",
        ("microsoft.directory/conditionalAccessPolicies/allProperties/allTasks",
         "microsoft.office365.securityComplianceCenter/allEntities/allTasks"),
    ),
    (
        CONDITIONAL_ACCESS_ADMINISTRATOR, "Conditional Access Administrator",
        "Can manage Conditional Access capabilities.",
        ("microsoft.directory/conditionalAccessPolicies/allProperties/allTasks",
         "microsoft.directory/namedLocations/allProperties/allTasks"),
    ),
    (
        USER_ADMINISTRATOR, "User Administrator",
        "Can manage all aspects of users and groups, including resetting passwords for limited admins.",
        ("microsoft.directory/users/allProperties/allTasks", "microsoft.directory/groups/allProperties/allTasks"),
    ),
    (
        HELPDESK_ADMINISTRATOR, "Helpdesk Administrator",
        "Can reset passwords for non-administrators and Helpdesk Administrators.",
        ("microsoft.directory/users/password/update", "microsoft.directory/users/invalidateAllRefreshTokens"),
    ),
)


def builtin_role_definitions() -> list[dict[str, Any]]:
    """The five built-in roles the product grants, shaped like role_definitions_filter_global_admin."""
    return [
        {
            "id": role_id,
            "description": description,
            "displayName": name,
            "isBuiltIn": True,
            "isEnabled": True,
            "resourceScopes": ["/"],
            "templateId": role_id,  # built-in roles: id == templateId
            "version": "1",
            "rolePermissions": [{"allowedResourceActions": list(actions), "condition": None}],
        }
        for role_id, name, description, actions in _BUILTIN_ROLES
    ]


def normalise_user(user: dict[str, Any]) -> dict[str, Any]:
    """Fill Graph's default properties so unseeded ones read back as null, as on a sparse real user."""
    if "id" not in user or "userPrincipalName" not in user:
        raise ValueError("a user needs at least id and userPrincipalName")
    out: dict[str, Any] = {p: None for p in USER_DEFAULT_PROPERTIES}
    out["businessPhones"] = []
    out["accountEnabled"] = True
    out["userType"] = "Member"
    out.update(copy.deepcopy(user))
    return out


def normalise_group(group: dict[str, Any]) -> dict[str, Any]:
    if "id" not in group:
        raise ValueError("a group needs an id")
    out: dict[str, Any] = {
        "id": group["id"], "displayName": None, "description": None, "mail": None, "mailEnabled": False,
        "securityEnabled": True, "isAssignableToRole": False, "groupTypes": [],
    }
    out.update({k: copy.deepcopy(v) for k, v in group.items() if k != "members"})
    return out


class Directory:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.memberships: dict[str, list[str]] = {}  # group id -> direct member ids (users or groups)
        self.owners: dict[str, list[str]] = {}  # group id -> owner ids
        self.role_definitions: dict[str, dict[str, Any]] = {r["id"]: r for r in builtin_role_definitions()}

    # ----- seeding ---------------------------------------------------------------------------------------
    def replace_users(self, users: Iterable[dict[str, Any]]) -> None:
        self.users = {u["id"].lower(): normalise_user(u) for u in users}

    def replace_groups(self, groups: Iterable[dict[str, Any]]) -> None:
        self.groups = {}
        for group in groups:
            self.groups[group["id"].lower()] = normalise_group(group)
            if "members" in group:  # inline members are a convenience for seed files
                self.memberships[group["id"].lower()] = [m.lower() for m in group["members"]]

    def replace_memberships(self, memberships: dict[str, list[str]]) -> None:
        self.memberships = {g.lower(): [m.lower() for m in members] for g, members in memberships.items()}

    def replace_owners(self, owners: dict[str, list[str]]) -> None:
        self.owners = {g.lower(): [m.lower() for m in members] for g, members in owners.items()}

    def replace_role_definitions(self, definitions: Iterable[dict[str, Any]]) -> None:
        self.role_definitions = {d["id"].lower(): copy.deepcopy(d) for d in definitions}

    def to_json(self) -> dict[str, Any]:
        return {
            "users": list(self.users.values()),
            "groups": list(self.groups.values()),
            "memberships": {g: list(m) for g, m in self.memberships.items()},
            "owners": {g: list(m) for g, m in self.owners.items() if m},
            "role_definitions": list(self.role_definitions.values()),
        }

    # ----- queries ---------------------------------------------------------------------------------------
    def find_user(self, id_or_upn: str) -> dict[str, Any] | None:
        key = id_or_upn.lower()
        if key in self.users:
            return self.users[key]
        return next((u for u in self.users.values() if (u.get("userPrincipalName") or "").lower() == key), None)

    def find_group(self, group_id: str) -> dict[str, Any] | None:
        return self.groups.get(group_id.lower())

    def principal_exists(self, principal_id: str) -> bool:
        key = principal_id.lower()
        return key in self.users or key in self.groups

    def principal(self, principal_id: str) -> dict[str, Any] | None:
        key = principal_id.lower()
        if key in self.users:
            return {"@odata.type": "#microsoft.graph.user", **self.users[key]}
        if key in self.groups:
            return {"@odata.type": "#microsoft.graph.group", **self.groups[key]}
        return None

    def find_role(self, role_id: str) -> dict[str, Any] | None:
        return self.role_definitions.get(role_id.lower())

    def group_ids_of(self, member_id: str, *, transitive: bool) -> list[str]:
        """Groups containing ``member_id`` directly, or through nested groups when ``transitive``."""
        found: list[str] = []
        frontier = [member_id.lower()]
        seen: set[str] = set()
        while frontier:
            current = frontier.pop()
            for group_id, members in self.memberships.items():
                if current in members and group_id not in seen:
                    seen.add(group_id)
                    found.append(group_id)
                    if transitive:
                        frontier.append(group_id)
        return [g for g in found if g in self.groups]

    def member_ids_of(self, group_id: str, *, transitive: bool) -> list[str]:
        found: list[str] = []
        frontier = [group_id.lower()]
        seen: set[str] = {group_id.lower()}
        while frontier:
            for member in self.memberships.get(frontier.pop(), []):
                if member in seen:
                    continue
                seen.add(member)
                found.append(member)
                if transitive and member in self.groups:
                    frontier.append(member)
        return found
