"""``python -m tests.emulators``: run any subset of emulators in one process on loopback.

Prints exactly one stdout line, ``EMULATORS READY {"name": "url", ...}``, once every emulator listens (logs go
to stderr), and exits 0 on SIGTERM/SIGINT after closing the listeners.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from .runner import bind_loopback, url_for
from .stack import (
    FACTORIES,
    SECRET_TARGETS,
    StackConfig,
    StackConfigError,
    apply_seed,
    build_emulators,
    load_seed,
    write_tls_outputs,
)

READY_PREFIX = "EMULATORS READY "
log = logging.getLogger("services.emulators.cli")


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StackConfigError(f"{what} must be NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def parse_args(argv: list[str] | None = None) -> StackConfig:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators", description=__doc__)
    parser.add_argument("--config", help="JSON file with StackConfig keys (command-line options override it)")
    parser.add_argument("--emulators", help=f"comma-separated subset of: {','.join(FACTORIES)} (default: all)")
    parser.add_argument("--port", action="append", default=[], metavar="NAME=PORT", help="0 picks a free port")
    parser.add_argument("--seed", help='"demo" or a JSON seed file')
    parser.add_argument("--secret", action="append", default=[], metavar="NAME=VALUE",
                        help=f"one of: {', '.join(SECRET_TARGETS)}")
    parser.add_argument("--entra-ca-out", help="write the Entra emulator's CA certificate (PEM) here")
    parser.add_argument("--entra-ca-bundle-out", help="write system roots + Entra CA here (for REQUESTS_CA_BUNDLE)")
    parser.add_argument("--pim-min-active-seconds", type=float)
    parser.add_argument("--graph-write-rate", type=float, help="Graph writes per second before 429 (default off)")
    parser.add_argument("--clock-offset", type=float, help="seconds added to every emulator clock")
    parser.add_argument("--clock-scale", type=float, help="emulator time runs this many times faster")
    parser.add_argument("--clock-anchor", type=float, help="unix time from which --clock-scale counts")
    parser.add_argument("--fault-seed", type=int)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)

    data: dict[str, Any] = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            data = json.load(handle)
    config = StackConfig.from_json(data)
    if args.emulators:
        chosen = [n.strip() for n in args.emulators.split(",") if n.strip()]
        config.emulators = {name: config.emulators.get(name, {}) for name in chosen}
    config.ports.update({k: int(v) for k, v in _pairs(args.port, "--port").items()})
    config.secrets.update(_pairs(args.secret, "--secret"))
    overrides = {
        "seed": args.seed, "entra_ca_out": args.entra_ca_out, "entra_ca_bundle_out": args.entra_ca_bundle_out,
        "pim_min_active_seconds": args.pim_min_active_seconds, "graph_write_rate_limit": args.graph_write_rate,
        "clock_offset_s": args.clock_offset, "fault_seed": args.fault_seed, "clock_scale": args.clock_scale,
        "clock_anchor": args.clock_anchor,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    return config


async def serve(config: StackConfig) -> int:
    emulators = build_emulators(config)
    apply_seed(emulators, load_seed(config.seed))
    write_tls_outputs(emulators, config)  # before READY: consumers read the CA as soon as they see the line
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    try:
        for name, emulator in emulators.items():
            ssl_context = emulator.ssl_context()
            sock = bind_loopback("127.0.0.1", config.ports.get(name, 0))
            runner = web.AppRunner(emulator.build_app(), handle_signals=False, access_log=None,
                                   shutdown_timeout=2.0)
            await runner.setup()
            runners.append(runner)
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
            urls[name] = url_for(sock, ssl_context)[0]

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        sys.stdout.write(READY_PREFIX + json.dumps(urls, sort_keys=True) + "\n")
        sys.stdout.flush()
        await stop.wait()
        log.info("stopping emulators")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(argv)
        return asyncio.run(serve(config))
    except (StackConfigError, OSError, ValueError) as exc:
        print(f"emulators: {exc}", file=sys.stderr)
        return 2
