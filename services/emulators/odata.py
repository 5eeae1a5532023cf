"""The small OData subset Graph clients use here: ``$filter`` with ``eq``/``ne``/``in`` and, on DateTimeOffset
values (unquoted, as Graph writes them), ``ge``/``le``/``gt``/``lt``, joined by ``and``; property paths such as
``initiatedBy/user/id``; and ``$select``. Anything else is rejected loudly so an unsupported query never silently
matches everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)"
    r"|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))"
    r"|(?P<num>-?\d+(?:\.\d+)?(?![\w-]))|(?P<word>[A-Za-z_@$][\w./@$-]*))"
)


class ODataError(ValueError):
    """An unsupported or malformed query option (Graph answers 400 BadRequest)."""


ORDERING = {"ge": lambda a, b: a >= b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
            "lt": lambda a, b: a < b}


@dataclass(frozen=True)
class Condition:
    prop: str
    op: str  # "eq" | "ne" | "in" | "ge" | "le" | "gt" | "lt"
    values: tuple[Any, ...]

    def test(self, obj: Mapping[str, Any]) -> bool:
        actual = _path(obj, self.prop)
        if self.op in ORDERING:
            moment = _as_datetime(actual)
            return moment is not None and ORDERING[self.op](moment, self.values[0])
        hit = any(_equal(actual, v) for v in self.values)
        return not hit if self.op == "ne" else hit


def _path(obj: Mapping[str, Any], prop: str) -> Any:
    """``initiatedBy/user/id``: a null step (``initiatedBy.user`` is null for an app) matches nothing."""
    if prop in obj:  # a flattened row keyed by the whole path
        return obj[prop]
    value: Any = obj
    for step in prop.split("/"):
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return _parse_dt(value)
    except ValueError:
        return None


def _parse_dt(text: str) -> datetime:
    # Graph writes seven fractional digits; fromisoformat takes at most six.
    match = re.fullmatch(r"(.*?T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?", text)
    if not match:
        raise ValueError(text)
    base, fraction, zone = match.groups()
    fraction = ("." + fraction[:6]) if fraction else ""
    zone = "+00:00" if zone in (None, "Z") else zone
    moment = datetime.fromisoformat(base + fraction + zone)
    return moment.astimezone(UTC)


def _equal(actual: Any, expected: Any) -> bool:
    # Directory string comparisons (ids, names) are case-insensitive in Graph.
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold()
    return actual == expected


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ODataError(f"Invalid filter clause: unexpected text at position {pos}: {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _literal(kind: str, raw: str) -> Any:
    if kind == "dt":
        return _parse_dt(raw)
    if kind == "str":
        return raw[1:-1].replace("''", "'")
    if kind == "num":
        return float(raw) if "." in raw else int(raw)
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    raise ODataError(f"Invalid filter clause: expected a literal, got {raw!r}")


def parse_filter(text: str | None) -> list[Condition]:
    """A conjunction of conditions; ``None``/empty means no filtering."""
    if not text or not text.strip():
        return []
    tokens = _tokens(text)
    conditions: list[Condition] = []
    i = 0

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens):
            raise ODataError("Invalid filter clause: unexpected end of expression")
        i += 1
        return tokens[i - 1]

    while True:
        kind, prop = take()
        if kind != "word":
            raise ODataError(f"Invalid filter clause: expected a property name, got {prop!r}")
        _, op = take()
        op = op.lower()
        if op in ("eq", "ne"):
            conditions.append(Condition(prop, op, (_literal(*take()),)))
        elif op in ORDERING:
            value = _literal(*take())
            if not isinstance(value, datetime):
                raise ODataError(f"Invalid filter clause: '{op}' is supported on DateTimeOffset values only")
            conditions.append(Condition(prop, op, (value,)))
        elif op == "in":
            if take()[0] != "lp":
                raise ODataError("Invalid filter clause: 'in' needs a parenthesised list")
            values: list[Any] = []
            while True:
                values.append(_literal(*take()))
                sep_kind, _ = take()
                if sep_kind == "rp":
                    break
                if sep_kind != "comma":
                    raise ODataError("Invalid filter clause: malformed 'in' list")
            conditions.append(Condition(prop, "in", tuple(values)))
        else:
            raise ODataError(f"Invalid filter clause: unsupported operator {op!r}")
        if i == len(tokens):
            return conditions
        _, joiner = take()
        if joiner.lower() != "and":
            raise ODataError(f"Invalid filter clause: only 'and' is supported, got {joiner!r}")


def check_properties(conditions: Iterable[Condition], allowed: Iterable[str], type_name: str) -> None:
    allowed_set = set(allowed)
    for condition in conditions:
        if condition.prop not in allowed_set:
            raise ODataError(
                f"Invalid filter clause: Could not find a property named '{condition.prop}' on type "
                f"'microsoft.graph.{type_name}'."
            )


def apply_filter(items: Iterable[Mapping[str, Any]], conditions: list[Condition]) -> list[Any]:
    return [item for item in items if all(c.test(item) for c in conditions)]


def parse_select(text: str | None) -> list[str] | None:
    if not text:
        return None
    fields = [f.strip() for f in text.split(",") if f.strip()]
    return fields or None


def apply_select(obj: Mapping[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if fields is None:
        return dict(obj)
    out = {f: obj.get(f) for f in fields}
    for key, value in obj.items():
        if key.startswith("@odata."):
            out.setdefault(key, value)
    return out


def context_select_suffix(fields: list[str] | None) -> str:
    """``(id,displayName)`` as Graph appends it to ``@odata.context`` for ``$select`` queries."""
    return f"({','.join(fields)})" if fields else ""
