"""`breakglass serve` and `breakglass manifest build` (contributed through the breakglass.commands entry point)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the Teams bot endpoint (POST /api/messages)")
    serve.add_argument("--host", help="address to bind (default BREAKGLASS_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default BREAKGLASS_PORT, 3978)")
    serve.set_defaults(func=_serve)
    manifest = sub.add_parser("manifest", help="Teams app manifest")
    msub = manifest.add_subparsers(dest="manifest_command", required=True, metavar="ACTION")
    build = msub.add_parser("build", help="build the app package zip for upload to Teams")
    build.add_argument("--out", type=Path, required=True, help="zip file to write")
    build.add_argument("--version", default=None, help="app version (default: the package version)")
    build.set_defaults(func=_manifest_build)


def _serve(args: argparse.Namespace) -> int:
    from bot.serve import run_serve
    return run_serve(args.host, args.port)


def _manifest_build(args: argparse.Namespace) -> int:
    from bot.manifest import build_package
    from services.settings import get_settings
    out = build_package(get_settings(), args.out, version=args.version)
    print(f"wrote {out}")
    return 0
