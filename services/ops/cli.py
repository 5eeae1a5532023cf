"""The `breakglass` command. Subcommands are contributed through the `breakglass.commands` entry-point group
(see pyproject.toml), so this module never imports the bot or the jobs package."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points, version

from policies.document import PolicyError
from services.errors import ServiceError
from services.settings import ConfigurationError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="breakglass", description="Temporary, governed privileged access in "
                                                                    "Microsoft Entra ID via Microsoft Teams.")
    parser.add_argument("-V", "--version", action="version", version=f"breakglass {version('breakglass')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for ep in sorted(entry_points(group="breakglass.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigurationError as exc:
        print(f"breakglass: refusing to start: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"breakglass: invalid policy:\n{exc}", file=sys.stderr)
        return 1
    except ServiceError as exc:
        print(f"breakglass: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
