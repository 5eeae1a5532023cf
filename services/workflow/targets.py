"""Can each entitlement of the policy actually be granted in this tenant? Read from Graph for `policy check
--online` and `doctor`, so a group PIM does not manage (or one that cannot take members) is a clear finding before
anyone asks for it, never a failed grant at 3 AM or a 500."""

from __future__ import annotations

from dataclasses import dataclass

from policies.document import Entitlement, PolicyDocument
from policies.model import GrantMode
from services.ports import Graph, GraphError, GraphForbiddenError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
ONBOARD = ("onboard it in Entra admin center > Identity Governance > Privileged Identity Management > Groups > "
           "Discover groups (irreversible), or set BREAKGLASS_GRANT_MODE=direct")


@dataclass(frozen=True)
class TargetFinding:
    index: int
    entitlement: str
    status: str
    message: str

    def render(self) -> str:
        return f"entitlements[{self.index}] ({self.entitlement}): {self.message}"


def check_targets(policy: PolicyDocument, graph: Graph, mode: GrantMode) -> list[TargetFinding]:
    """One finding per group entitlement (roles are checked by the grant itself and by doctor's Graph read)."""
    findings: list[TargetFinding] = []
    for index, ent in enumerate(policy.entitlements):
        if ent.kind != "group":
            continue
        try:
            status, message = _group(ent, graph, mode)
        except GraphForbiddenError as exc:
            status, message = FAIL, (f"Graph refused to read the group ({exc.code}): grant the Graph app "
                                     f"{_permissions(mode)}")
        except GraphError as exc:
            status, message = FAIL, f"could not read the group from Graph: {exc.code}"
        findings.append(TargetFinding(index, ent.id, status, message))
    return findings


def _group(ent: Entitlement, graph: Graph, mode: GrantMode) -> tuple[str, str]:
    target = ent.assignable()
    name = target.describe()
    group = graph.group(target.object_id)
    if group is None:
        return FAIL, f"{name}: no group {target.object_id} in the tenant"
    if any(str(t).lower() == "dynamicmembership" for t in group.get("groupTypes") or []):
        return FAIL, f"{name}: a dynamic group; its members come from a rule and cannot be granted"
    if mode is GrantMode.PIM:
        if group.get("onPremisesSyncEnabled"):
            return FAIL, f"{name}: synced from on-premises, which PIM for Groups does not support"
        if not graph.group_pim_managed(target.object_id):
            return FAIL, f"{name}: the group is not onboarded to PIM for Groups; {ONBOARD}"
        return OK, f"{name}: managed by PIM for Groups"
    if group.get("onPremisesSyncEnabled"):
        return FAIL, f"{name}: synced from on-premises; change its {target.scope}s there, not in Entra"
    if group.get("isAssignableToRole"):
        return WARN, (f"{name}: role-assignable; changing its {target.scope}s directly also needs "
                      "RoleManagement.ReadWrite.Directory")
    return OK, f"{name}: direct {target.scope}ship"


def _permissions(mode: GrantMode) -> str:
    if mode is GrantMode.PIM:
        return "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup and RoleManagementPolicy.Read.AzureADGroup"
    return "GroupMember.ReadWrite.All (Group.ReadWrite.All for owner access)"
