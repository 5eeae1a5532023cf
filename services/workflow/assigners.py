"""One seam per kind of entitlement: assign, read back, lengthen, remove and list what Graph holds.

`GrantService` decides *whether* and *when* (ledger, fencing, adoption, retries); an `Assigner` only knows *how*
Graph spells it for one kind in one mode:

| kind  | pim mode                                                  | direct mode (no P2)                          |
|-------|-----------------------------------------------------------|----------------------------------------------|
| role  | roleAssignmentScheduleRequests / …Instances               | roleAssignments                              |
| group | privilegedAccess/group/assignmentScheduleRequests / …Inst. | groups/{id}/members/$ref (owners/$ref)       |

Every assigner raises the port's errors: `RoleAssignmentExistsError` when Graph already holds the assignment,
`RoleAssignmentDoesNotExistError` when there is nothing to remove, anything else as Graph answered. A loop over
several entitlements (a bundle) calls `for_target` once per member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from policies.assignable import Assignable
from policies.model import GrantMode
from services.ports import Graph, GraphError, RoleAssignmentDoesNotExistError, RoleAssignmentExistsError


@dataclass(frozen=True)
class Held:
    """An assignment as Graph lists it. `scope` is the directory scope of a role or the access of a group;
    `time_bound` is False for a permanent assignment (or a direct one, which has no end of its own)."""

    id: str
    principal_id: str
    start: datetime | None
    end: datetime | None
    schedule_id: str | None = None
    scope: str = "/"
    time_bound: bool = True


class Assigner(Protocol):
    mode: GrantMode

    def create(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
               justification: str, ticket: str | None, system: str | None) -> str:
        """Ask Graph for the assignment: the schedule request id (pim) or the assignment id (direct)."""
        ...

    def find(self, target: Assignable, principal: str, assignment_id: str | None = None) -> Held | None:
        """The principal's current assignment of the target, read back from Graph; None when there is none. With
        `assignment_id`, only that one (a direct role may sit beside another assignment of the same role)."""
        ...

    def lengthen(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
                 justification: str) -> None:
        """Move the end of the existing assignment (pim); a direct assignment has no end to move."""
        ...

    def remove(self, target: Assignable, principal: str, assignment_id: str | None, justification: str) -> None:
        """Take it away; RoleAssignmentDoesNotExistError when Graph holds nothing to remove."""
        ...

    def listing(self, target: Assignable) -> list[Held]:
        """Everyone who currently holds the target (the foreign-assignment scan)."""
        ...

    def held_outside(self, target: Assignable, principal: str) -> bool:
        """Whether the principal holds the target in a way `find` does not list (a group's standing member when
        PIM reports the assignment exists): never ours to adopt."""
        ...


class RolePim:
    mode = GrantMode.PIM

    def __init__(self, graph: Graph):
        self.graph = graph

    def create(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
               justification: str, ticket: str | None, system: str | None) -> str:
        return self.graph.assign_pim(principal_id=principal, role_id=target.object_id, scope=target.scope,
                                     start=start, duration=duration, justification=justification,
                                     ticket_number=ticket, ticket_system=system).id

    def find(self, target: Assignable, principal: str, assignment_id: str | None = None) -> Held | None:
        for inst in self.graph.instances(principal_id=principal, role_id=target.object_id):
            if inst.directory_scope_id == target.scope:
                return Held(inst.id, inst.principal_id, inst.start, inst.end, inst.schedule_id,
                            inst.directory_scope_id, inst.end is not None)
        return None

    def lengthen(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
                 justification: str) -> None:
        self.graph.update_pim(principal_id=principal, role_id=target.object_id, scope=target.scope, start=start,
                              duration=duration, justification=justification)

    def remove(self, target: Assignable, principal: str, assignment_id: str | None, justification: str) -> None:
        self.graph.remove_pim(principal_id=principal, role_id=target.object_id, scope=target.scope,
                              justification=justification)

    def listing(self, target: Assignable) -> list[Held]:
        return [Held(i.id, i.principal_id, i.start, i.end, i.schedule_id, i.directory_scope_id, i.end is not None)
                for i in self.graph.instances(role_id=target.object_id)]

    def held_outside(self, target: Assignable, principal: str) -> bool:
        return False  # permanent role assignments are listed as instances too


class RoleDirect:
    mode = GrantMode.DIRECT

    def __init__(self, graph: Graph):
        self.graph = graph

    def create(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
               justification: str, ticket: str | None, system: str | None) -> str:
        return self.graph.create_direct(principal_id=principal, role_id=target.object_id, scope=target.scope).id

    def find(self, target: Assignable, principal: str, assignment_id: str | None = None) -> Held | None:
        for a in self.graph.direct_assignments(principal_id=principal, role_id=target.object_id):
            if a.id == assignment_id if assignment_id else a.directory_scope_id == target.scope:
                return Held(a.id, a.principal_id, None, None, None, a.directory_scope_id, False)
        return None

    def lengthen(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
                 justification: str) -> None:
        return None  # no end in Graph: the scheduled revoke is the end

    def remove(self, target: Assignable, principal: str, assignment_id: str | None, justification: str) -> None:
        if not assignment_id:
            return
        try:
            self.graph.delete_direct(assignment_id)
        except GraphError as exc:
            if exc.status == 404:
                raise RoleAssignmentDoesNotExistError(404, exc.code, exc.message) from None
            raise

    def listing(self, target: Assignable) -> list[Held]:
        return [Held(a.id, a.principal_id, None, None, None, a.directory_scope_id, False)
                for a in self.graph.direct_assignments(role_id=target.object_id)]

    def held_outside(self, target: Assignable, principal: str) -> bool:
        return False


class GroupPim:
    """PIM for Groups: the role request shape keyed by groupId + accessId (PROTOCOL_NOTES §8.4)."""

    mode = GrantMode.PIM

    def __init__(self, graph: Graph):
        self.graph = graph

    def create(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
               justification: str, ticket: str | None, system: str | None) -> str:
        return self.graph.assign_group_pim(principal_id=principal, group_id=target.object_id, access=target.scope,
                                           start=start, duration=duration, justification=justification,
                                           ticket_number=ticket, ticket_system=system).id

    def find(self, target: Assignable, principal: str, assignment_id: str | None = None) -> Held | None:
        for inst in self.graph.group_instances(group_id=target.object_id, principal_id=principal):
            if inst.access == target.scope and inst.principal_id == principal.lower():
                return Held(inst.id, inst.principal_id, inst.start, inst.end, inst.schedule_id, inst.access,
                            inst.end is not None)
        return None

    def lengthen(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
                 justification: str) -> None:
        self.graph.update_group_pim(principal_id=principal, group_id=target.object_id, access=target.scope,
                                    start=start, duration=duration, justification=justification)

    def remove(self, target: Assignable, principal: str, assignment_id: str | None, justification: str) -> None:
        self.graph.remove_group_pim(principal_id=principal, group_id=target.object_id, access=target.scope,
                                    justification=justification)

    def listing(self, target: Assignable) -> list[Held]:
        """PIM's instances, and the group's standing members (or owners) that no instance covers, as permanent."""
        rows = [Held(i.id, i.principal_id, i.start, i.end, i.schedule_id, i.access, i.end is not None)
                for i in self.graph.group_instances(group_id=target.object_id) if i.access == target.scope]
        covered = {r.principal_id for r in rows}
        rows += [Held(GroupDirect.link_id(target, p), p, None, None, None, target.scope, False)
                 for p in sorted(self.graph.group_member_ids(target.object_id, target.scope) - covered)]
        return rows

    def held_outside(self, target: Assignable, principal: str) -> bool:
        return principal.lower() in self.graph.group_member_ids(target.object_id, target.scope)


class GroupDirect:
    """Direct membership or ownership (no P2): members/$ref and owners/$ref. Graph keeps no assignment object, so
    the id is composed (`{group}_{access}_{principal}`) and the end is ours alone: the scheduled revoke and the
    reconciler enforce it."""

    mode = GrantMode.DIRECT

    def __init__(self, graph: Graph):
        self.graph = graph

    @staticmethod
    def link_id(target: Assignable, principal: str) -> str:
        return f"{target.object_id}_{target.scope}_{principal.lower()}"

    def create(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
               justification: str, ticket: str | None, system: str | None) -> str:
        try:
            self.graph.add_group_member(group_id=target.object_id, principal_id=principal, access=target.scope)
        except GraphError as exc:
            # "Already exists" is a 400 Request_BadRequest told apart only by its message: look instead.
            if exc.status == 400 and principal.lower() in self.graph.group_member_ids(target.object_id,
                                                                                       target.scope):
                raise RoleAssignmentExistsError(400, exc.code, exc.message) from None
            raise
        return self.link_id(target, principal)

    def find(self, target: Assignable, principal: str, assignment_id: str | None = None) -> Held | None:
        if principal.lower() in self.graph.group_member_ids(target.object_id, target.scope):
            return Held(self.link_id(target, principal), principal.lower(), None, None, None, target.scope, False)
        return None

    def lengthen(self, target: Assignable, principal: str, *, start: datetime, duration: timedelta,
                 justification: str) -> None:
        return None

    def remove(self, target: Assignable, principal: str, assignment_id: str | None, justification: str) -> None:
        if not self.graph.remove_group_member(group_id=target.object_id, principal_id=principal,
                                              access=target.scope):
            raise RoleAssignmentDoesNotExistError(404, "Request_ResourceNotFound", "not a member")

    def listing(self, target: Assignable) -> list[Held]:
        return [Held(self.link_id(target, p), p, None, None, None, target.scope, False)
                for p in sorted(self.graph.group_member_ids(target.object_id, target.scope))]

    def held_outside(self, target: Assignable, principal: str) -> bool:
        return False  # find lists every member


def for_target(graph: Graph, target: Assignable, mode: GrantMode) -> Assigner:
    """The assigner for this kind of entitlement in this grant mode."""
    if target.is_group:
        return GroupPim(graph) if mode is GrantMode.PIM else GroupDirect(graph)
    return RolePim(graph) if mode is GrantMode.PIM else RoleDirect(graph)
