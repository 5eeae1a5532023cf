"""ISO-8601 timestamps and durations in the exact shapes each service puts on the wire."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_FRACTION = re.compile(r"\.(\d+)")


def parse_duration(text: str) -> timedelta:
    """``PT30M``, ``PT1H30M``, ``P1D``, ``PT0.5H``; years/months are rejected (not a fixed length)."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"invalid ISO-8601 duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(**parts)


def format_duration(value: timedelta) -> str:
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    out = "P" + (f"{days}D" if days else "")
    return out + (f"T{time_part}" if time_part else ("" if days else "T0S"))


def parse_datetime(text: str) -> datetime:
    """An aware UTC datetime from ISO-8601 with ``Z``/offset and up to 7 fractional digits (Graph style)."""
    cleaned = text.strip()
    cleaned = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), cleaned, count=1)
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    value = datetime.fromisoformat(cleaned)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def graph_datetime(value: datetime | None) -> str | None:
    """Graph's 7-fractional-digit UTC form: ``2025-06-01T10:05:32.7654321Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def graph_date_seconds(value: datetime) -> str:
    """The ``innerError.date`` form: ``2025-06-01T10:05:31`` (no zone, no fraction)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def servicenow_datetime(value: datetime) -> str:
    """ServiceNow's ``2025-06-01 09:55:00`` (UTC, as the Table API returns it for an API user)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def zulu_seconds(value: datetime) -> str:
    """Freshservice / Bot Framework ``2025-06-01T10:05:41Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_seconds(value: datetime) -> str:
    """Halo's zone-less ``2025-06-01T09:55:00``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
