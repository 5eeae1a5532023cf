"""What an entitlement puts in the directory: a directory role at a scope, or a group's membership or ownership.

One typed value per kind, so the workflow can assign, read back, remove and list any of them through one seam
(`services.workflow.assigners`) and a loop over several entitlements can call it per member. Pure data: no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator


class AssignableKind(StrEnum):
    ROLE = "role"
    GROUP = "group"


GroupAccess = Literal["member", "owner"]


class Assignable(BaseModel):
    """A directory role (`object_id` is the role definition id, `scope` its directory scope) or a group
    (`object_id` is the group's object id, `scope` the access: member or owner)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AssignableKind = AssignableKind.ROLE
    object_id: str
    scope: str = "/"
    display_name: str = ""

    @field_validator("object_id")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()

    @staticmethod
    def role(role_definition_id: str, scope: str = "/", display_name: str = "") -> Assignable:
        return Assignable(kind=AssignableKind.ROLE, object_id=role_definition_id, scope=scope or "/",
                          display_name=display_name)

    @staticmethod
    def group(group_id: str, access: str, display_name: str = "") -> Assignable:
        if access not in ("member", "owner"):
            raise ValueError(f"group access must be member or owner, got {access!r}")
        return Assignable(kind=AssignableKind.GROUP, object_id=group_id, scope=access, display_name=display_name)

    @property
    def is_group(self) -> bool:
        return self.kind is AssignableKind.GROUP

    @property
    def access(self) -> str:
        return self.scope if self.is_group else ""

    @property
    def ledger_role(self) -> str:
        """The ledger's second key part. Role keys stay the bare role id (records written before groups existed
        keep their ledgers); a group's is prefixed so it can never meet a role id."""
        return f"group:{self.object_id}" if self.is_group else self.object_id

    def ledger_key(self, principal_id: str) -> tuple[str, str, str]:
        return (principal_id.lower(), self.ledger_role, self.scope)

    def kind_label(self) -> str:
        """"Role", "Group membership", "Group ownership": the word cards and receipts put before the name."""
        if not self.is_group:
            return "Role"
        return "Group ownership" if self.scope == "owner" else "Group membership"

    def describe(self) -> str:
        """The name a person reads: "Exchange Admins (group member)" for a group, the role's name otherwise."""
        name = self.display_name or self.object_id
        return f"{name} (group {self.scope})" if self.is_group else name
