"""What an account changed in the directory in a window: its `directoryAudits` (PROTOCOL_NOTES §8.3).

The evidence pack of a grant (issue 19) collects the same for the person who held a role; this is the one function
both need, kept small so that they can become one."""

from __future__ import annotations

from datetime import datetime

from policies.emergency import DirectoryAction
from services.ports import IdentityLogs


def account_actions(logs: IdentityLogs, account: str, since: datetime,
                    until: datetime | None = None) -> list[DirectoryAction]:
    """Directory changes `account` initiated in the window, oldest first (Graph documents no row order). The log
    is minutes late: an empty list means "nothing visible yet". A row that cannot be read is left out."""
    actions = []
    for row in logs.directory_audits(initiated_by=account, since=since, until=until):
        try:
            actions.append(DirectoryAction.from_row(row))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(actions, key=lambda a: (a.at, a.id))
