"""RQ jobs: the reconciler tick and the scan for assignments made outside breakglass."""

from __future__ import annotations

from typing import Any

from jobs.context import services


def reconcile() -> dict[str, Any]:
    return vars(services().reconciler.tick())


def scan_foreign_assignments() -> dict[str, Any]:
    return {"found": services().foreign_scan.scan()}
