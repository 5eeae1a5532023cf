"""Durations as people write them in policy files and chat ("4h", "90m", "1h30m", "PT30M")."""

from __future__ import annotations

import re
from datetime import timedelta

import isodate

_COMPACT = re.compile(r"^\s*(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+)\s*s)?\s*$")


class DurationError(ValueError):
    pass


def parse_duration(value: object) -> timedelta:
    """Parse a policy duration. Bare numbers are minutes, because that is what people mean in this domain."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise DurationError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return timedelta(minutes=float(value))
    if not isinstance(value, str) or not value.strip():
        raise DurationError(f"not a duration: {value!r}")
    text = value.strip()
    if text.upper().startswith("P"):
        try:
            parsed = isodate.parse_duration(text.upper())
        except (isodate.ISO8601Error, ValueError) as exc:
            raise DurationError(f"not an ISO 8601 duration: {value!r}") from exc
        if not isinstance(parsed, timedelta):
            raise DurationError(f"years and months are not allowed in durations: {value!r}")
        return parsed
    match = _COMPACT.match(text.lower())
    if not match or not any(match.groupdict().values()):
        raise DurationError(f"not a duration: {value!r} (use e.g. 30m, 4h, 1h30m or PT30M)")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    return timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0),
                     seconds=parts.get("s", 0))


def format_duration(value: timedelta | None) -> str:
    """Human wording: '30 minutes', '4 hours', '1 hour 30 minutes'."""
    if value is None:
        return "-"
    total = int(value.total_seconds())
    if total < 60:
        return f"{total} second{'s' if total != 1 else ''}"
    hours, rem = divmod(total, 3600)
    minutes, seconds = divmod(rem, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if minutes:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    if seconds and not hours:
        parts.append(f"{seconds} second{'s' if seconds != 1 else ''}")
    return " ".join(parts)


def iso_duration(value: timedelta) -> str:
    """ISO 8601 duration as Graph's scheduleInfo.expiration.duration wants it (PT30M, PT4H, PT1H30M)."""
    total = int(value.total_seconds())
    if total <= 0:
        raise DurationError("duration must be positive")
    hours, rem = divmod(total, 3600)
    minutes, seconds = divmod(rem, 60)
    out = "PT"
    if hours:
        out += f"{hours}H"
    if minutes:
        out += f"{minutes}M"
    if seconds:
        out += f"{seconds}S"
    return out
