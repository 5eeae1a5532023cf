"""RulesTriage: deterministic, offline recognition of role names, durations, tickets, severity and target.

Conservative by design: it only suggests what it clearly recognises, never invents an entitlement id (role
names are matched against the policy's own entitlements), and never raises on any input.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from policies.document import Entitlement, PolicyDocument
from policies.durations import format_duration
from policies.engine import find_ticket_reference
from services.triage.model import Suggestion
from services.triage.text import EMAIL, clean_text, fold, quote, words

# Only the first part of a very long message is analysed; the justification keeps up to the policy's limit.
SCAN_LIMIT = 8000

# Well-known Entra roles: role template id, canonical display name, and what people call them in chat.
# An alias only counts when the policy has an entitlement for that role (same template id or display name).
KNOWN_ROLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("62e90394-69f5-4237-9190-012177145e10", "Global Administrator",
     ("GA", "global admin", "tenant admin", "company admin", "company administrator")),
    ("194ae4cb-b126-40b2-bd5b-6091b380977d", "Security Administrator", ("sec admin", "security admin")),
    ("b1be1c3e-b65d-4f19-8427-f6fa0d97feb9", "Conditional Access Administrator",
     ("CA admin", "conditional access admin")),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator", ("user admin",)),
    ("729827e3-9c14-49f7-bb1b-9608f156bbb8", "Helpdesk Administrator",
     ("helpdesk admin", "help desk admin", "password admin")),
    ("e8611ab8-c189-46e8-94e1-60213ab1f814", "Privileged Role Administrator", ("privileged role admin",)),
    ("7be44c8a-adaf-4e2a-84d6-ab2649e08a13", "Privileged Authentication Administrator",
     ("privileged authentication admin", "privileged auth admin")),
    ("c4e39bd9-1100-46d3-8c65-fb160da0071f", "Authentication Administrator",
     ("authentication admin", "auth admin")),
    ("29232cdf-9323-42fd-ade2-1d097af3e4de", "Exchange Administrator", ("exchange admin", "exo admin")),
    ("f28a1f50-f6e7-4571-818b-6a12f2af6b6c", "SharePoint Administrator", ("sharepoint admin", "spo admin")),
    ("3a2c62db-5318-420d-8d74-23affee5d9d5", "Intune Administrator", ("intune admin",)),
    ("9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3", "Application Administrator", ("application admin", "app admin")),
    ("158c047a-c907-4556-b7ef-446551a6b5f7", "Cloud Application Administrator",
     ("cloud application admin", "cloud app admin")),
)

# "not GA", "instead of Global Admin", "don't need GA": a role mentioned only to rule it out.
_NEGATED = re.compile(r"(?:^|\s)(?:not|no|never|instead of|rather than|don t need|dont need|do not need|"
                      r"doesn t need|does not need)(?: (?:a|an|the|full|any|need|needing))? $")

# --- durations ----------------------------------------------------------------------------------------------

_B = r"(?<![\w.,:/])"  # a number starts here, not in the middle of "INC0012345" or "1.5"
_E = r"(?![\w])"
_H = r"(?:hours?|hrs?|h)"
_M = r"(?:minutes?|mins?|m)"
_DEC = r"\d{1,5}(?:[.,]\d{1,2})?"
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "forty five": 45, "forty-five": 45, "sixty": 60, "ninety": 90,
}
_WORDNUM = "|".join(sorted((re.escape(w) for w in _NUMBER_WORDS), key=len, reverse=True))
_HALF = r"\s+and\s+a\s+half"

_DURATION = re.compile(
    "|".join((
        # 1h30m, 1 hour 30 minutes, 1 hour and 30 minutes, 1h 30min
        rf"{_B}(?P<hm_h>\d{{1,3}})\s*{_H}\s*(?:and\s+)?(?P<hm_m>\d{{1,3}})\s*{_M}{_E}",
        # 1h30
        rf"{_B}(?P<hc_h>\d{{1,3}})h(?P<hc_m>[0-5]\d){_E}",
        # 1:30h, 1:30 hours
        rf"{_B}(?P<cl_h>\d{{1,2}}):(?P<cl_m>[0-5]\d)\s*{_H}{_E}",
        r"\b(?P<tq>three[\s-]quarters?\s+of\s+an?\s+hour)\b",
        r"\b(?P<half>half\s+an?\s+hour|half[\s-]hour|1/2\s*(?:an?\s+)?(?:hours?|hrs?|h))\b",
        r"\b(?P<quarter>quarter(?:\s+of)?(?:\s+an?)?[\s-]+hour)\b",
        r"\b(?P<couple>(?:a\s+)?couple(?:\s+of)?\s+hours?)\b",
        # 2h, 2 hours, 1.5 hours, 1,5 h, 2-hour, 1 and a half hours, 2 hours and a half
        rf"{_B}(?P<h_n>{_DEC})(?P<h_pre>{_HALF})?[\s-]*{_H}(?P<h_post>{_HALF})?{_E}",
        # an hour, one hour, an hour and a half, two and a half hours
        rf"\b(?P<hw_n>{_WORDNUM}|an?)(?P<hw_pre>{_HALF})?[\s-]+(?:hours?|hrs?){_E}(?P<hw_post>{_HALF})?",
        # 30 minutes, 30 min, 30m, 90 mins, 30-minute
        rf"{_B}(?P<m_n>{_DEC})[\s-]*{_M}{_E}(?!\s+ago)",
        rf"\b(?P<mw_n>{_WORDNUM})[\s-]+(?:minutes?|mins?){_E}(?!\s+ago)",
        rf"{_B}(?P<d_n>\d{{1,2}})[\s-]*days?{_E}",
    )),
    re.IGNORECASE,
)


def _num(text: str) -> float:
    text = text.strip().lower()
    if text in ("a", "an"):
        return 1.0
    if text in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[text])
    return float(text.replace(",", "."))


def _minutes(m: re.Match[str]) -> int | None:
    g = m.groupdict()
    if g["hm_h"] is not None:
        value = int(g["hm_h"]) * 60 + int(g["hm_m"])
    elif g["hc_h"] is not None:
        value = int(g["hc_h"]) * 60 + int(g["hc_m"])
    elif g["cl_h"] is not None:
        value = int(g["cl_h"]) * 60 + int(g["cl_m"])
    elif g["tq"]:
        value = 45
    elif g["half"]:
        value = 30
    elif g["quarter"]:
        value = 15
    elif g["couple"]:
        value = 120
    elif g["h_n"] is not None:
        value = round((_num(g["h_n"]) + (0.5 if g["h_pre"] or g["h_post"] else 0)) * 60)
    elif g["hw_n"] is not None:
        value = round((_num(g["hw_n"]) + (0.5 if g["hw_pre"] or g["hw_post"] else 0)) * 60)
    elif g["m_n"] is not None:
        value = round(_num(g["m_n"]))
    elif g["mw_n"] is not None:
        value = round(_num(g["mw_n"]))
    elif g["d_n"] is not None:
        value = int(g["d_n"]) * 24 * 60
    else:  # pragma: no cover - every alternative sets a group
        return None
    return value if value > 0 else None


def find_duration(text: str) -> tuple[int, str] | None:
    """The first duration written in the text, in whole minutes, with the phrase it came from."""
    for m in _DURATION.finditer(fold(text)):
        minutes = _minutes(m)
        if minutes is not None:
            return minutes, m.group(0)
    return None


# --- severity -----------------------------------------------------------------------------------------------

_SEV_CODE = re.compile(r"(?<!\S)(?:p|sev|severity|prio|priority)\s?(?P<n>[1-4])(?!\S)")
_LICENCE_NEXT = re.compile(r"^ (?:licen[cs]es?|lic|skus?|plans?|features?|tier|subscriptions?)(?!\S)")
_LICENCE_PREV = re.compile(r"(?:^|\s)(?:entra id|entra|azure ad|aad|premium|ems|id)$")
_SEV_WORDS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"(?<!\S)major incident(?!\S)"), 1),
    (re.compile(r"(?<!\S)outages?(?!\S)"), 1),
    (re.compile(r"(?<!\S)critical(?!\S)"), 1),
    (re.compile(r"(?<!\S)(?:high (?:priority|severity|urgency|impact)|"
                r"(?:priority|severity|urgency) high)(?!\S)"), 2),
    (re.compile(r"(?<!\S)(?:(?:medium|moderate) (?:priority|severity)|"
                r"(?:priority|severity) (?:medium|moderate))(?!\S)"), 3),
    (re.compile(r"(?<!\S)(?:low (?:priority|severity)|(?:priority|severity) low)(?!\S)"), 4),
)
# "business-critical app", "no outage", "not critical": not an incident severity.
_SEV_WORD_NOT = re.compile(r"(?:^|\s)(?:not|no|non|not a|not an|without|business|mission|time|safety|"
                           r"planned)$")


def find_severity(normal: str) -> tuple[int, str] | None:
    """P1..P4 as written ("P1", "sev 1", "severity 2"), else the most severe of a few unambiguous words."""
    for m in _SEV_CODE.finditer(normal):
        if _LICENCE_NEXT.match(normal[m.end():]) or _LICENCE_PREV.search(normal[: m.start()].rstrip()):
            continue  # "Entra ID P1", "P2 licence": a licence, not a priority
        return int(m.group("n")), m.group(0)
    best: tuple[int, str] | None = None
    for pattern, level in _SEV_WORDS:
        for m in pattern.finditer(normal):
            if _SEV_WORD_NOT.search(normal[: m.start()].rstrip()):
                continue
            if best is None or level < best[0]:
                best = (level, m.group(0))
            break
    return best


# --- target -------------------------------------------------------------------------------------------------

_TARGET = re.compile(rf"\b(?:for|on behalf of)\s+(?:(?:the\s+)?(?:user|account)\s+)?(?P<upn>{EMAIL.pattern})",
                     re.IGNORECASE)
# Words that make "for bob@..." the subject of the task ("reset the password for bob@..."), not the grantee.
_TASK_WORDS = frozenset({
    "reset", "unlock", "password", "passwords", "mfa", "licence", "license", "licences", "licenses",
    "offboard", "offboarding", "onboard", "onboarding", "create", "update", "disable", "enable", "block",
    "unblock", "revoke", "remove", "delete", "restore", "fix", "investigate", "troubleshoot", "check",
    "review", "mailbox", "sign", "signin", "login", "membership",
})


def find_target(text: str) -> tuple[str | None, list[str]]:
    notes: list[str] = []
    folded = fold(text)
    for m in _TARGET.finditer(folded):
        upn = m.group("upn").lower()
        clause = re.split(r"[.;!?\n]", folded[: m.start()])[-1]
        before = set(words(clause).split()[-6:])
        if before & _TASK_WORDS:
            notes.append(f"{upn} looks like who the task is about, not who receives access; "
                         "not used as target.")
            continue
        return upn, notes
    return None, notes


# --- roles --------------------------------------------------------------------------------------------------

def _variants(alias: str) -> set[str]:
    base = words(alias)
    if not base:
        return set()
    out = {base}
    if base.endswith(" administrator"):
        out.add(base.removesuffix(" administrator") + " admin")
    elif base.endswith(" admin"):
        out.add(base.removesuffix(" admin") + " administrator")
    for v in list(out):
        if " " in v:
            out.add(v.replace(" ", ""))  # "GlobalAdmin", "SecAdmin"
    return out


@dataclass(frozen=True)
class _Index:
    aliases: dict[str, str]  # normalised alias -> entitlement id
    pattern: re.Pattern[str] | None
    hints: tuple[tuple[re.Pattern[str], str, str], ...]  # keyword pattern, entitlement id, task


def _build_index(policy: PolicyDocument) -> _Index:
    aliases: dict[str, str] = {}
    ambiguous: set[str] = set()

    def add(alias: str, ent_id: str) -> None:
        for v in _variants(alias):
            if v in aliases and aliases[v] != ent_id:
                ambiguous.add(v)
            aliases.setdefault(v, ent_id)

    # Precedence: the policy's own display names, then ids of two or more words, then the alias table.
    for ent in policy.entitlements:
        add(ent.display_name, ent.id)
    for ent in policy.entitlements:
        if len(words(ent.id).split()) >= 2:
            add(ent.id, ent.id)
    for template_id, canonical, known in KNOWN_ROLES:
        for ent in policy.entitlements:
            if ent.role_template_id == template_id or words(ent.display_name) == words(canonical):
                for alias in known:
                    for v in _variants(alias):
                        aliases.setdefault(v, ent.id)
    # Two of the policy's own names normalising to the same words: neither is a safe guess.
    for v in ambiguous:
        aliases.pop(v, None)
    pattern = None
    if aliases:
        alternation = "|".join(re.escape(a) for a in sorted(aliases, key=len, reverse=True))
        pattern = re.compile(rf"(?<!\S)(?:{alternation})(?!\S)")
    hints = []
    for hint in policy.least_privilege:
        if policy.entitlement(hint.entitlement) is None:
            continue
        for kw in hint.keywords:
            kw_words = words(kw)
            if kw_words:
                hints.append((re.compile(rf"(?<!\S){re.escape(kw_words)}"), hint.entitlement, hint.task))
    return _Index(aliases=aliases, pattern=pattern, hints=tuple(hints))


_CACHE: OrderedDict[int, tuple[PolicyDocument, _Index]] = OrderedDict()
_CACHE_SIZE = 8


def _index(policy: PolicyDocument) -> _Index:
    entry = _CACHE.get(id(policy))
    if entry is not None and entry[0] is policy:
        _CACHE.move_to_end(id(policy))
        return entry[1]
    index = _build_index(policy)
    _CACHE[id(policy)] = (policy, index)  # holding the policy keeps its id from being reused
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return index


def find_roles(policy: PolicyDocument, text: str) -> list[tuple[str, str]]:
    """Entitlement ids named in the text, first mention first, with the phrase; negated mentions skipped."""
    index = _index(policy)
    if index.pattern is None:
        return []
    # E-mail addresses and URLs are not role names ("ga@contoso.example").
    scrubbed = re.sub(r"\S+@\S+|\bhttps?://\S+", " ", fold(text))
    normal = words(scrubbed)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for m in index.pattern.finditer(normal):
        if _NEGATED.search(normal[: m.start()]):
            continue
        ent_id = index.aliases[m.group(0)]
        if ent_id not in seen:
            seen.add(ent_id)
            out.append((ent_id, m.group(0)))
    return out


def find_bundle(policy: PolicyDocument, text: str, named: list[str]) -> tuple[str, str] | None:
    """A bundle the text asks for: by its name (key or display name), or by naming exactly its roles. Never one
    with a role the text did not name: a bundle is suggested only where it is no wider than what was asked."""
    normal = f" {words(fold(text))} "
    for key, bundle in policy.bundles.items():
        for name in {key.replace("-", " ").replace("_", " "), bundle.display_name}:
            phrase = words(fold(name))
            if phrase and f" {phrase} " in normal and \
                    not _NEGATED.search(normal[: normal.index(f" {phrase} ") + 1].lstrip()):
                return key, f"the {bundle.display_name or key} bundle"
    for key, bundle in policy.bundles.items():
        if set(named) == set(bundle.entitlements):
            return key, "the roles you named"
    return None


def find_least_privilege(policy: PolicyDocument, text: str) -> tuple[Entitlement, list[str]] | None:
    """The smallest entitlement enough for every task the text mentions (policy's least_privilege table)."""
    normal = words(text)
    needed: Entitlement | None = None
    tasks: list[str] = []
    for pattern, ent_id, task in _index(policy).hints:
        if pattern.search(normal):
            ent = policy.entitlement(ent_id)
            if ent is None:  # pragma: no cover - filtered when indexing
                continue
            if task not in tasks:
                tasks.append(task)
            # Several tasks: the role must cover all of them, so take the most privileged of the small roles.
            if needed is None or ent.privilege > needed.privilege:
                needed = ent
    return (needed, tasks) if needed is not None else None


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class RulesTriage:
    """The default triage: deterministic, offline, no I/O. `analyse` is the synchronous core."""

    source = "rules"

    async def suggest(self, text: str, policy: PolicyDocument) -> Suggestion | None:
        return self.analyse(text, policy)

    def analyse(self, text: str, policy: PolicyDocument) -> Suggestion | None:
        if not isinstance(text, str) or not text.strip():
            return None
        scan = text[:SCAN_LIMIT]
        notes: list[str] = []

        entitlement: str | None = None
        roles = find_roles(policy, scan)
        if roles:
            entitlement, phrase = roles[0]
            ent = policy.entitlement(entitlement)
            name = ent.display_name if ent else entitlement
            notes.append(f'Role: {name} (from "{quote(phrase)}").')
            others = [policy.entitlement(r) for r, _ in roles[1:]]
            if others:
                notes.append("Also mentioned: " + ", ".join(o.display_name for o in others if o) + ".")

        bundle: str | None = None
        found_bundle = find_bundle(policy, scan, [r for r, _ in roles])
        if found_bundle is not None:
            bundle, why = found_bundle
            notes.append(f"Bundle: {policy.bundle_name(bundle)} ({why}).")

        least: str | None = None
        lp = find_least_privilege(policy, scan)
        if lp is not None:
            needed, tasks = lp
            requested = policy.entitlement(entitlement) if entitlement else None
            if requested is None:
                entitlement = needed.id
                notes.append(f"No role named; {needed.display_name} is enough for {_and(tasks)}.")
            elif needed.privilege < requested.privilege:
                least = needed.id
                notes.append(f"{needed.display_name} would be enough for {_and(tasks)}; "
                             f"{requested.display_name} is more than this task needs.")

        duration_minutes: int | None = None
        found = find_duration(scan)
        if found is not None:
            duration_minutes, phrase = found
            notes.append(f'Duration: {_format_minutes(duration_minutes)} (from "{quote(phrase)}").')

        ticket = find_ticket_reference(policy, fold(scan))
        if ticket:
            notes.append(f"Ticket: {ticket}.")

        severity: int | None = None
        sev = find_severity(words(scan))
        if sev is not None:
            severity, phrase = sev
            notes.append(f'Severity: P{severity} (from "{quote(phrase)}").')

        target, target_notes = find_target(scan)
        notes.extend(target_notes)
        if target:
            notes.append(f"Target: {target}.")

        justification = clean_text(text, policy.justification.max_length) or None
        found_values = {"entitlement": entitlement, "duration_minutes": duration_minutes, "ticket": ticket,
                        "severity": severity, "target_upn": target, "least_privilege": least, "bundle": bundle}
        return Suggestion(
            entitlement=entitlement,
            bundle=bundle,
            duration_minutes=duration_minutes,
            ticket=ticket,
            severity=severity,  # find_severity returns 1..4 only
            justification=justification,
            target_upn=target,
            least_privilege=least,
            notes=notes,
            source="rules",
            origins={k: "rules" for k, v in found_values.items() if v is not None},
            asked=entitlement,
        )


def _format_minutes(minutes: int) -> str:
    return format_duration(timedelta(minutes=minutes))
