"""`breakglass policy ...` and `breakglass audit ...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from policies.document import policy_json_schema, review_policy
from policies.durations import parse_duration
from policies.engine import evaluate
from policies.model import Facts, GrantRequest, Principal
from services.composition import Runtime
from services.ops.progress import Progress
from services.settings import get_settings
from services.state.policy_source import default_policy_path, read_policy, read_policy_text


def register_policy(sub: Any) -> None:
    policy = sub.add_parser("policy", help="check, explain and describe the policy file")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = psub.add_parser("check", help="validate a policy file (exit 0 when valid)")
    check.add_argument("file", nargs="?", type=Path, help="policy file (default: the configured one)")
    check.add_argument("--strict", action="store_true",
                       help="fail (exit 1) on warnings too: a tier-0 role without approval, an empty denylist")
    check.add_argument("--online", action="store_true",
                       help="also read the tenant through Graph: every group entitlement's group exists and can be "
                            "granted in the configured mode (onboarded to PIM for Groups in pim mode)")
    check.set_defaults(func=cmd_policy_check)
    schema = psub.add_parser("schema", help="print the JSON Schema of the policy file")
    schema.set_defaults(func=cmd_policy_schema)
    explain = psub.add_parser("explain", help="dry run: print the Decision for a request file as JSON")
    explain.add_argument("--request", required=True, type=Path, help="JSON file: {request, facts, now}")
    explain.add_argument("--policy", type=Path, help="policy file (default: the configured one)")
    explain.set_defaults(func=cmd_policy_explain)


def register_audit(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify, export and read the audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = asub.add_parser("verify", help="check the hash chain and signatures, and that the log still holds "
                                            "everything the anchors and the rest of Redis say happened (exit 1 "
                                            "otherwise)")
    verify.add_argument("--anchor", type=Path, action="append", default=[],
                        help="an anchor file (JSON lines) or an evidence pack (.json) from a ticket; repeatable "
                             "(default: BREAKGLASS_AUDIT_ANCHOR_FILE)")
    verify.set_defaults(func=cmd_audit_verify)
    export = asub.add_parser("export", help="export events for a SIEM or archive")
    export.add_argument("--since", help="ISO 8601 time, e.g. 2026-11-01T00:00:00Z")
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")
    export.set_defaults(func=cmd_audit_export)
    show = asub.add_parser("show", help="print one request's audit trail")
    show.add_argument("request_id")
    show.set_defaults(func=cmd_audit_show)
    checkpoint = asub.add_parser("checkpoint", help="sign the current head as a checkpoint")
    checkpoint.set_defaults(func=cmd_audit_checkpoint)
    # The usage report reads the audit log; registered here so that it needs no entry point of its own.
    report = sub.add_parser("report", help="access review: who used which role, how often, for how long, who "
                                           "approved; role creep flagged (reads the audit log)")
    report.add_argument("--since", default="90d", help="a duration back from now (90d, 30d, 12h) or an ISO date")
    report.add_argument("--format", choices=["md", "csv", "json"], default="md")
    report.add_argument("--out", type=Path, help="file to write (default: stdout)")
    report.add_argument("--no-directory", action="store_true",
                        help="do not read the eligible groups' members from Graph (no never-activated candidates)")
    report.set_defaults(func=cmd_report)


def _configured_policy_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    return get_settings().policy_file or default_policy_path()


def cmd_policy_check(args: argparse.Namespace) -> int:
    path = _configured_policy_path(args.file)
    doc, risks = review_policy(*read_policy_text(path))
    lanes = sum(len(e.lanes) for e in doc.entitlements)
    bundles = f", {len(doc.bundles)} bundle{'s' if len(doc.bundles) != 1 else ''}" if doc.bundles else ""
    print(f"OK: {path}: {len(doc.entitlements)} entitlements, {lanes} lanes, "
          f"{len(doc.approver_groups)} approver groups{bundles} (digest {doc.digest()})")
    for risk in risks:
        print(f"WARNING: {risk.render(str(path))}", file=sys.stderr)
    if getattr(args, "online", False):
        failed = _check_online(doc, path, args.strict)
        if failed:
            return 1
    if risks and args.strict:
        print(f"breakglass: {len(risks)} warning{'s' if len(risks) != 1 else ''} and --strict: failing",
              file=sys.stderr)
        return 1
    return 0


def _check_online(doc: Any, path: Path, strict: bool) -> bool:
    """Print what Graph says about each group entitlement; True when any cannot be granted (or warns, --strict).
    Graph being unreachable is one clear line, never a stack trace."""
    from policies.model import GrantMode
    from services.clients.graph import build_graph
    from services.errors import ServiceError
    from services.workflow.targets import FAIL, WARN, check_targets

    settings = get_settings()
    mode = GrantMode(settings.grant_mode)
    try:
        findings = check_targets(doc, build_graph(settings, None), mode)
    except (ServiceError, ValueError) as exc:
        print(f"ERROR: {path}: could not read the tenant through Graph: {str(exc)[:300]}", file=sys.stderr)
        return True
    bad = False
    for finding in findings:
        if finding.status == FAIL or (strict and finding.status == WARN):
            bad = True
        label = {FAIL: "ERROR", WARN: "WARNING"}.get(finding.status, "OK")
        print(f"{label}: {path}: {finding.render()}", file=sys.stderr if label != "OK" else sys.stdout)
    if not findings:
        print(f"OK: {path}: no group entitlements to check in the tenant ({mode.value} mode)")
    return bad


def cmd_policy_schema(args: argparse.Namespace) -> int:
    print(json.dumps(policy_json_schema(), indent=2))
    return 0


def _principal(data: dict[str, Any] | None, fallback_id: str) -> Principal:
    data = dict(data or {})
    data.setdefault("object_id", fallback_id)
    return Principal.model_validate(data)


def load_explain_request(path: Path) -> tuple[GrantRequest, Facts, datetime]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    req = dict(doc["request"])
    now = datetime.fromisoformat(doc["now"]) if doc.get("now") else datetime.now(UTC)
    req.setdefault("id", "dry-run")
    req.setdefault("target", req["requester"])
    req.setdefault("created_at", now.isoformat())
    req["duration"] = parse_duration(req["duration"])
    request = GrantRequest.model_validate(req)
    facts_doc = doc.get("facts", {})
    requester = _principal(facts_doc.get("requester"), request.requester)
    target = requester if request.target == requester.object_id else _principal(facts_doc.get("target"),
                                                                                 request.target)
    facts = Facts.model_validate({"requester": requester, "target": target, "ticket": facts_doc.get("ticket"),
                                  "active_grants": facts_doc.get("active_grants", []),
                                  "already_granted": parse_duration(facts_doc.get("already_granted", 0))})
    return request, facts, now


def cmd_policy_explain(args: argparse.Namespace) -> int:
    policy = read_policy(_configured_policy_path(args.policy))
    request, facts, now = load_explain_request(args.request)
    decision = evaluate(request, facts, now, policy)
    out = decision.model_dump(mode="json")
    out["reasons"] = decision.reasons
    out["summary"] = decision.summary()
    # A bundle is explained member by member: each member's own decision, reasons and summary, in bundle order.
    for member, dumped in zip(decision.members, out["members"], strict=True):
        dumped["reasons"] = member.reasons
        dumped["summary"] = member.summary()
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _runtime() -> Runtime:
    settings = get_settings()
    settings.require()
    return Runtime(settings)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from services.state.anchors import read_anchors, verify_everything

    runtime = _runtime()
    paths = list(args.anchor) or ([runtime.settings.audit_anchor_file] if runtime.settings.audit_anchor_file
                                  else [])
    anchors, problems = [], []
    for path in paths:
        try:
            found, bad = read_anchors(path)
        except FileNotFoundError:
            if args.anchor:
                print(f"breakglass audit verify: no anchor file {path}", file=sys.stderr)
                return 2
            # The configured file appears with the first anchored event; none yet means nothing to reach.
            continue
        except (OSError, UnicodeDecodeError) as exc:
            print(f"breakglass audit verify: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        anchors += found
        problems += bad
    result = verify_everything(runtime.store, runtime.audit, anchors, anchor_problems=problems)
    print(result.render())
    return 0 if result.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    audit = _runtime().audit
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00")) if args.since else None
    total = audit.count()
    out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    written = 0
    try:
        with Progress("exporting audit events", total, enabled=args.out is not None) as progress:
            for line in audit.export(since):
                out.write(line + "\n")
                written += 1
                progress.advance()
    finally:
        if args.out:
            out.close()
    print(f"exported {written} event(s)", file=sys.stderr)
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    events = _runtime().audit.for_request(args.request_id)
    if not events:
        print(f"no audit events for {args.request_id}", file=sys.stderr)
        return 1
    for ev in events:
        detail = json.dumps(ev.data, ensure_ascii=False, sort_keys=True)
        print(f"{ev.seq:>7}  {ev.at}  {ev.event:<28} {ev.actor:<40} {detail}")
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    cp = _runtime().audit.checkpoint()
    print(json.dumps(cp) if cp else "log is empty")
    return 0


def parse_since(value: str, now: datetime) -> datetime:
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_report(args: argparse.Namespace) -> int:
    from services.composition import Services
    from services.workflow.usage import usage_report

    runtime = _runtime()
    now = runtime.clock.now()
    try:
        since = parse_since(args.since, now)
    except ValueError:
        print(f"breakglass report: --since {args.since!r} is neither a duration (90d) nor an ISO date",
              file=sys.stderr)
        return 2
    directory = None if args.no_directory else Services(runtime).directory
    report, warnings = usage_report(runtime.audit, runtime.store, runtime.policies.current(), since=since,
                                    until=now, directory=directory)
    text = {"md": report.to_markdown, "csv": report.to_csv, "json": report.to_json}[args.format]()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    for warning in warnings:
        print(f"breakglass report: {warning}", file=sys.stderr)
    print(f"breakglass report: {len(report.lines)} line(s), {len(report.flagged())} flagged, "
          f"{report.events_read:,} events read", file=sys.stderr)
    return 0


def register_dev(sub: Any) -> None:
    from services.ops.devstack import add_port_flags

    dev = sub.add_parser("dev", help="run everything locally: embedded Redis, emulators, bot, worker, scheduler")
    dev.add_argument("--data-dir", type=Path, default=Path(".state/dev"), help="where state is kept")
    dev.add_argument("--at", help="pretend it is this time, e.g. 2026-11-23T10:00+01:00 (or 'monday')")
    dev.add_argument("--speed", type=float, default=1.0, help="let time run this many times faster (demo use)")
    dev.add_argument("--any-ports", action="store_true",
                     help="let the emulators pick free ports instead of 3991-3995 (tests, parallel stacks)")
    add_port_flags(dev, dev=True)
    dev.add_argument("--triage", choices=("rules", "openai"), default="rules",
                     help="openai: run the OpenAI-compatible emulator as the triage model (script its answers "
                          "through its /_emulator/state)")
    dev.set_defaults(func=cmd_dev)
    demo = sub.add_parser("demo", help="play the four seed scenarios headlessly and print a timeline")
    demo.add_argument("--keep", type=Path, help="keep the demo's state in this directory")
    demo.add_argument("--speed", type=float, default=60.0,
                      help="let time run this many times faster (default 60: a 30-minute grant lasts 30 s)")
    demo.add_argument("--bundle", action="store_true",
                      help="play one bundle request (three roles, one approval, all or nothing) instead")
    add_port_flags(demo, dev=False)
    demo.set_defaults(func=cmd_demo)
    doctor = sub.add_parser("doctor", help="check configuration and reachability")
    doctor.add_argument("--env-file", type=Path, help="load settings from this file (e.g. .state/dev/dev.env)")
    doctor.set_defaults(func=cmd_doctor)


def cmd_dev(args: argparse.Namespace) -> int:
    import signal
    import threading

    from services.ops.devstack import (
        DevConfig,
        DevStack,
        DevStackError,
        free_port,
        next_monday_10_berlin,
        playground_command,
        ports_from,
    )

    at = None
    if args.at:
        at = next_monday_10_berlin() if args.at.lower() == "monday" else datetime.fromisoformat(args.at)
        # Without an offset the time is UTC; with one, convert, since the banner and the clock work in UTC.
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    try:
        ports = ports_from(args)
    except DevStackError as exc:
        print(f"breakglass dev: {exc}", file=sys.stderr)
        return 2
    if not ports["bot"]:
        ports["bot"] = free_port()
    config = DevConfig(data_dir=args.data_dir, ports=ports, at=at, scale=args.speed, triage=args.triage,
                       redis_url=os.environ.get("REDIS_URL") or None)
    stack = DevStack(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stack.start()
    except DevStackError as exc:
        stack.stop()
        print(f"breakglass dev: {exc}", file=sys.stderr)
        return 1
    env_file = stack.data / "dev.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(stack.env.items())
                                if k.startswith(("BREAKGLASS_", "Microsoft", "ENTRA_", "GRAPH_", "SERVICENOW_",
                                                 "TEAMS_", "TRIAGE_", "REDIS_URL", "REQUESTS_CA_BUNDLE"))))
    env_file.chmod(0o600)
    print(stack.describe())
    print(f"""
Try it (another terminal):
  Microsoft 365 Agents Playground as the Teams client (pinned; once: (cd docs/playground && npm ci)):
{textwrap.indent(playground_command(stack.bot_url), "    ")}
    then open http://127.0.0.1:56150 and type: Need Global Admin for 30 minutes to fix the CA lockout, INC0012345
  Check the stack:   .venv/bin/breakglass doctor --env-file {env_file}
  Read the audit:    set -a; . {env_file}; set +a; .venv/bin/breakglass audit verify

Ctrl-C stops every process started here; state stays in {stack.data}.""", flush=True)
    try:
        while not stop.wait(1.0):
            dead = stack.alive()
            if dead:
                print(f"breakglass dev: {', '.join(dead)} exited; see {stack.data / 'logs'}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping…", flush=True)
        stack.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.ops.demo import run_demo
    if not 1 <= args.speed <= 3600:
        print("breakglass demo: --speed must be between 1 and 3600", file=sys.stderr)
        return 2
    from services.ops.devstack import DevStackError, ports_from

    try:
        ports = ports_from(args)
    except DevStackError as exc:
        print(f"breakglass demo: {exc}", file=sys.stderr)
        return 2
    return run_demo(args.keep, speed=args.speed, ports=ports, bundle=args.bundle)


def cmd_doctor(args: argparse.Namespace) -> int:
    import os

    from services.ops.doctor import FAIL, Doctor, render
    from services.settings import Settings

    if args.env_file:
        for line in args.env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key and not key.startswith("#"):
                os.environ[key.strip()] = value.strip()
    checks = Doctor(Settings()).run()
    print(render(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0
