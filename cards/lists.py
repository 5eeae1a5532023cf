"""Help, request lists and plain notices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cards import layout as lay
from cards.builder import Element, columns, fact, fact_set, render
from cards.builder import text as text_block
from policies.lifecycle import State
from policies.record import RequestRecord

MAX_ROWS = 25  # keeps a list card well under Teams' ~28 KB card limit
_ENDS_STATES = frozenset({State.ACTIVATING, State.ACTIVE, State.REVOKING})


def help_card(commands: list[tuple[str, str]]) -> dict[str, Any]:
    body: list[Element] = [lay.header("breakglass", kicker="Temporary admin access")]
    if commands:
        body.append(fact_set([fact(command, description) for command, description in commands]))
    return render(body, fallback_text="breakglass commands")


def requests_list_card(title: str, records: list[RequestRecord], now: datetime, empty_text: str) -> dict[str, Any]:
    body: list[Element] = [lay.header(title)]
    if not records:
        body.append(text_block(empty_text, subtle=True))
    for record in records[:MAX_ROWS]:
        body.append(_row(record, now))
    if len(records) > MAX_ROWS:
        body.append(text_block(f"{len(records) - MAX_ROWS} more not shown.", subtle=True))
    return render(body, fallback_text=title)



def _row(record: RequestRecord, now: datetime) -> Element:
    state = record.state
    return columns(
        ([text_block(record.id, line=True, limit=40, bold=True)], "auto"),
        ([text_block(lay.role_name(record), line=True, limit=80)], "stretch"),
        ([text_block(lay.state_label(state), line=True, color=lay.state_color(state))], "auto"),
        ([text_block(_when(record, now), line=True, subtle=True)], "auto"),
        separator=True,
    )


def _when(record: RequestRecord, now: datetime) -> str:
    if record.grant is not None and record.state in _ENDS_STATES:
        return f"ends {lay.clock(record.grant.ends_at, now)}"
    if record.state.terminal:
        return f"ended {lay.clock(lay.ended_at(record), now)}"
    return f"created {lay.clock(record.created_at, now)}"


def message_card(text: str) -> dict[str, Any]:
    return render([text_block(text, limit=2000)], fallback_text=text)
