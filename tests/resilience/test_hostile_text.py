"""Requester text reaches the systems of record inert (issue 16, item 2).

One hostile justification goes in through the real Teams endpoint (the intake form's submit invoke) and comes out
of every sink it reaches; an approver's hostile deny reason and a hostile Graph error message go to the Teams
`summary`. The emulators record the bytes they received: a ServiceNow work note has no `[code]` tag and no line
that looks like one of breakglass's own; Freshservice and Halo notes are escaped HTML; the evidence Markdown keeps
the justification in a fence so a forged `## Approvals` section is only text; a `summary` is one plain line. And
nowhere is there an ESC, CR, BEL, BS, bidi override or zero-width character.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_app
from policies.lifecycle import State
from services.clock import OffsetClock
from services.composition import Runtime, Services
from tests.harness import MONDAY_10_BERLIN, Product, offset_to, product_settings, start_stack
from tests.integration.bot.conftest import Teams, serving
from tests.integration.bot.test_flows import intake, only_request, pending_riley_request, submit

HOSTILE = ("Restore the deleted finance accounts after the sync failure INC0012347\r\n"
           "## Approvals\n- approve by Dana Whitfield at 2026-11-23T09:00:00+00:00\n"
           "[code]<img src=x onerror=alert(1)>[/code] [ CODE ]<script>alert(2)</script>[/Code] <b>bold</b>\n"
           "\x1b[31mred\x1b[0m\rover\x07bell\x08bs \u202eevil\u202c zero\u200bwidth\u2060 "
           "[breakglass] User Administrator for Riley Chen expired; the role assignment was removed\n"
           "Justification: forged\n```\n~~~\n[APPROVED](https://evil.example/x) ![img](https://evil.example/i.png)")
HOSTILE_REASON = ("No\r\n[code]<img src=x onerror=alert(3)>[/code]\x1b[2J\u202eyes\u202c\u200b please " + "x" * 300)
HOSTILE_GRAPH = "Denied\r\n\x1b[31m[code]<svg onload=alert(4)>[/code]\u202e\u200b by policy\x07"
FORBIDDEN = {"\x1b": "ESC", "\r": "CR", "\x07": "BEL", "\x08": "BS", "\x00": "NUL", "\u202e": "RLO",
             "\u202c": "PDF", "\u200b": "ZWSP", "\u2060": "WJ"}
CODE_TAG = re.compile(r"\[\s*/?\s*code\s*\]", re.IGNORECASE)
TICKETS = {"servicenow": "INC0012347", "freshservice": "INC-0501", "halo": "INC5001"}
ITSM_SETTINGS = {
    "freshservice": lambda url: {"itsm": "freshservice", "freshservice_url": url,
                                 "freshservice_api_key": "breakglass-demo-freshservice-key"},
    "halo": lambda url: {"itsm": "halo", "halo_url": url, "halo_client_id": "breakglass-halo-client",
                         "halo_client_secret": "breakglass-demo-halo-secret", "halo_tenant": "contoso"},
}


def inert(where: str, text: str) -> None:
    found = [name for ch, name in FORBIDDEN.items() if ch in text]
    assert not found, f"{where} carries {found}: {text!r}"


def start_with(tmp: Path, redis_client: Any, redis_url: str, itsm: str) -> Product:
    offset = offset_to(MONDAY_10_BERLIN)
    stack, bundle = start_stack(tmp, offset, ["entra", "graph", itsm, "botconnector"])
    os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
    extra = ITSM_SETTINGS[itsm](stack.urls[itsm]) if itsm in ITSM_SETTINGS else {}
    settings = product_settings(stack.urls, redis_url, tmp / "state", offset, **extra)
    clock = OffsetClock(timedelta(seconds=offset))
    runtime = Runtime(settings, clock=clock, client=redis_client)
    return Product(stack=stack, settings=settings, runtime=runtime, services=Services(runtime), clock=clock)


@pytest.fixture(params=["servicenow", "freshservice", "halo"])
def product(request: Any, tmp_path: Path, redis_client: Any, redis_url: str) -> Iterator[Product]:
    p = start_with(tmp_path, redis_client, redis_url, request.param)
    p.extra["itsm"] = request.param
    yield p
    p.stop()


@asynccontextmanager
async def playing(product: Product) -> AsyncIterator[Teams]:
    async with serving(create_app(product.settings, product.services)) as client:
        yield Teams(client, product)


async def hostile_grant(teams: Teams) -> Any:
    """Riley asks for User Administrator (approved by rule) with the hostile justification, through the endpoint;
    the grant is made and its receipts delivered."""
    product = teams.product
    card = await intake(teams, "riley", "User admin to restore the deleted finance accounts")
    await submit(teams, "riley", card, entitlement="user-admin", duration="30", target="",
                 ticket=TICKETS[product.extra["itsm"]], justification=HOSTILE)
    record = only_request(product, "riley")
    product.run_jobs()
    record = product.store.get(record.id)
    assert record.state is State.ACTIVE, (record.state, record.failure)
    return record


def fences(markdown: str) -> tuple[list[str], str]:
    """(contents of fenced code blocks, everything outside them) of a CommonMark document."""
    inside: list[str] = []
    outside: list[str] = []
    fence: str | None = None
    block: list[str] = []
    for line in markdown.split("\n"):
        stripped = line.lstrip(" ")
        if fence is None:
            m = re.match(r"(`{3,}|~{3,})", stripped)
            if m and len(line) - len(stripped) <= 3:
                fence, block = m.group(1), []
            else:
                outside.append(line)
        elif re.fullmatch(re.escape(fence[0]) + "{" + str(len(fence)) + ",}\\s*", stripped):
            inside.append("\n".join(block))
            fence = None
        else:
            block.append(line)
    assert fence is None, "an unclosed fence swallows the rest of the document"
    return inside, "\n".join(outside)


def check_evidence_markdown(where: str, markdown: str, record_id: str) -> None:
    inert(where, markdown)
    inside, outside = fences(markdown)
    # The pack's own optional sections (follow-up steps, what was done while elevated) may be there or not,
    # depending on when the pack was made; nothing else may form a heading.
    optional = {"## Follow-up steps", "## What was done while elevated",
                "### Directory actions initiated by the holder", "### Sign-ins of the holder"}
    headings = [line for line in outside.split("\n") if line.startswith("#") and line not in optional]
    assert headings == [f"# breakglass evidence — {record_id}", "## Approvals", "## Grant", "## Audit trail",
                        "## Audit checkpoint"], headings
    assert any("## Approvals" in block and "[code]" in block for block in inside), \
        "the justification is kept verbatim, inside a fence"
    assert not re.search(r"(?<!\\)<[A-Za-z/!?]", outside), "raw HTML outside a fence"
    assert not re.search(r"(?<!\\)!\[", outside) and not re.search(r"(?<!\\)\]\(", outside), "a link or image"


def tags(html: str) -> set[str]:
    return {m.lower() for m in re.findall(r"</?[A-Za-z][^>]*>", html)}


async def test_one_hostile_justification_through_every_ticket_sink(product):
    itsm = product.extra["itsm"]
    async with playing(product) as teams:
        record = await hostile_grant(teams)
    stored = record.request.justification
    inert("the stored justification", stored)
    assert "<img src=x onerror=alert(1)>" in stored and "## Approvals" in stored  # cleaned, not rewritten
    if itsm == "servicenow":
        snow = product.servicenow
        [note] = [n for n in snow.work_notes("INC0012347") if "granted to" in n]
        inert("the ServiceNow work note", note)
        assert not CODE_TAG.search(note), note
        assert note.count("[breakglass]") == 1 and note.startswith("[breakglass] ")
        assert "\n" not in note, "every field on the note's one line: no line looks like one of ours"
        files = {a["file_name"]: snow.attachment_content(a["sys_id"]) for a in snow.attachments()}
        md = files[f"breakglass-{record.id}-activated.md"].decode()
        check_evidence_markdown("the evidence Markdown", md, record.id)
        pack = json.loads(files[f"breakglass-{record.id}-activated.json"])
        assert pack["request"]["justification"] == stored
    else:
        if itsm == "freshservice":
            bodies = [n["body"] for n in product.emulators["freshservice"].notes(501)]
        else:
            bodies = [a["note"] for a in product.emulators["halo"].actions_for(5001)]
        [note] = [b for b in bodies if "granted to" in b]
        inert(f"the {itsm} note", note)
        assert tags(note) <= {"<div>", "</div>", "<br>"}, tags(note)
        assert "&lt;img src=x onerror=alert(1)&gt;" in note and "&lt;script&gt;" in note
        [attached] = [b for b in bodies if f"breakglass-{record.id}-activated.md" in b]
        inert(f"the {itsm} evidence note", attached)
        assert tags(attached) <= {"<div>", "</div>", "<br>", "<b>", "</b>", "<pre>", "</pre>"}, tags(attached)
        assert "<img" not in attached and "<script" not in attached


def summaries(product: Product) -> list[str]:
    return [a["current"]["summary"] for a in product.connector.all_activities() if a["current"].get("summary")]


def check_summary(summary: str) -> None:
    inert("a Teams summary", summary)
    assert "\n" not in summary and len(summary) <= 200, summary
    assert summary == " ".join(summary.split()), "one plain line"
    assert "](" not in summary and "://" not in summary


async def test_deny_reasons_and_graph_errors_reach_teams_summaries_as_one_plain_line(tmp_path, redis_client,
                                                                                      redis_url):
    product = start_with(tmp_path, redis_client, redis_url, "servicenow")
    try:
        async with playing(product) as teams:
            record = await pending_riley_request(teams)
            await teams.invoke_card(teams.click("dana", "request.deny", record.id, reason=HOSTILE_REASON))
            product.run_jobs()
            denied = product.store.get(record.id)
            assert denied.state is State.DENIED
            inert("the stored deny reason", denied.approvals[-1].reason)
            told = teams.sent_to("riley")[-1]["summary"]
            assert told.startswith(f"Your request {record.id} for Global Administrator was denied: No ")
            # A grant Graph refuses with a hostile message: the requester's notice, the ticket note and the alert.
            product.graph.add_fault(path="roleAssignmentScheduleRequests", method="POST", status=400, times=1,
                                    body={"error": {"code": "RoleAssignmentRequestPolicyValidationFailed",
                                                    "message": HOSTILE_GRAPH}})
            card = await intake(teams, "sam", "Need Global Admin for 30 minutes to fix the Conditional Access "
                                              "lockout, INC0012345")
            await submit(teams, "sam", card)
            product.run_jobs()
            failed = only_request(product, "sam")
            assert failed.state is State.FAILED
            assert "by policy" in teams.sent_to("sam")[-1]["summary"]
            [note] = [n for n in product.servicenow.work_notes("INC0012345") if "FAILED" in n]
            inert("the ServiceNow failure note", note)
            assert not CODE_TAG.search(note) and "\n" not in note, note
        assert len(summaries(product)) >= 3  # the two notices and the alert (updated cards carry none)
        for summary in summaries(product):
            check_summary(summary)
    finally:
        product.stop()
