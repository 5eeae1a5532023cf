"""Build a set of emulators from one configuration (used by the CLI and by in-process test fixtures).

All emulators of a stack share one ``Clock`` so business time stays coherent across services (a ServiceNow
work note and the Graph expiry it describes agree on "now"), and Entra and Graph share the token secret.
"""

from __future__ import annotations

import inspect
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .automation import AutomationEmulator
from .base import Emulator
from .botauth import BotAuthEmulator
from .botconnector import BotConnectorEmulator
from .clock import Clock
from .entra import EntraEmulator
from .freshservice import FreshserviceEmulator
from .graph import GraphEmulator
from .halo import HaloEmulator
from .openai import OpenAIEmulator
from .runner import RunningEmulator
from .seed import demo_seed
from .servicenow import ServiceNowEmulator

FACTORIES: dict[str, Callable[..., Emulator]] = {
    "entra": EntraEmulator,
    "graph": GraphEmulator,
    "servicenow": ServiceNowEmulator,
    "freshservice": FreshserviceEmulator,
    "halo": HaloEmulator,
    "botconnector": BotConnectorEmulator,
    "botauth": BotAuthEmulator,
    "openai": OpenAIEmulator,
    "automation": AutomationEmulator,
}
# --secret NAME=VALUE -> (emulator, constructor keyword)
SECRET_TARGETS: dict[str, list[tuple[str, str]]] = {
    "token_signing_secret": [("entra", "signing_secret"), ("graph", "signing_secret")],
    "graph_client_id": [("entra", "client_id")],
    "graph_client_secret": [("entra", "client_secret")],
    "servicenow_username": [("servicenow", "username")],
    "servicenow_password": [("servicenow", "password")],
    "freshservice_api_key": [("freshservice", "api_key")],
    "halo_client_id": [("halo", "client_id")],
    "halo_client_secret": [("halo", "client_secret")],
    "openai_api_key": [("openai", "api_key")],
    "runbook_webhook_secret": [("automation", "secret")],
}


class StackConfigError(ValueError):
    pass


@dataclass
class StackConfig:
    emulators: dict[str, dict[str, Any]] = field(default_factory=lambda: {name: {} for name in FACTORIES})
    ports: dict[str, int] = field(default_factory=dict)
    seed: str | dict[str, Any] | None = None  # "demo", a JSON file path, or an inline seed document
    secrets: dict[str, str] = field(default_factory=dict)
    entra_ca_out: str | None = None
    entra_ca_bundle_out: str | None = None
    pim_min_active_seconds: float | None = None
    graph_write_rate_limit: float | None = None
    clock_offset_s: float = 0.0
    # A clock running `clock_scale` times faster from the real instant `clock_anchor` (unix seconds), matching the
    # product's development clock so both agree on "now" in a sped-up demo.
    clock_scale: float = 1.0
    clock_anchor: float | None = None
    fault_seed: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise StackConfigError(f"unknown config keys: {sorted(unknown)}")
        config = cls(**{k: v for k, v in data.items() if k != "emulators"})
        emulators = data.get("emulators")
        if emulators is not None:
            if isinstance(emulators, list):
                emulators = {name: {} for name in emulators}
            config.emulators = {name: dict(options or {}) for name, options in emulators.items()}
        for name, options in config.emulators.items():
            if "port" in options:
                config.ports.setdefault(name, int(options.pop("port")))
        return config


def build_emulators(config: StackConfig) -> dict[str, Emulator]:
    unknown = set(config.emulators) - set(FACTORIES)
    if unknown:
        raise StackConfigError(f"unknown emulators: {sorted(unknown)} (known: {sorted(FACTORIES)})")
    base = None
    if config.clock_scale != 1.0:
        anchor = datetime.fromtimestamp(config.clock_anchor if config.clock_anchor is not None else time.time(), UTC)
        scale = config.clock_scale

        def base() -> datetime:
            return anchor + (datetime.now(UTC) - anchor) * scale

    clock = Clock(base=base, offset_s=config.clock_offset_s)
    options = {name: dict(opts) for name, opts in config.emulators.items()}
    # Entra and Graph must agree on the HMAC secret; a fresh random one per stack unless configured.
    signing = config.secrets.get("token_signing_secret") or secrets.token_urlsafe(32)
    for name in ("entra", "graph"):
        options.get(name, {}).setdefault("signing_secret", signing)
    for secret_name, value in config.secrets.items():
        if secret_name not in SECRET_TARGETS:
            raise StackConfigError(f"unknown secret {secret_name!r} (known: {sorted(SECRET_TARGETS)})")
        for emulator, keyword in SECRET_TARGETS[secret_name]:
            if emulator in options:
                options[emulator][keyword] = value
    if "graph" in options:
        if config.pim_min_active_seconds is not None:
            options["graph"]["min_active_seconds"] = config.pim_min_active_seconds
        if config.graph_write_rate_limit is not None:
            options["graph"]["write_rate_limit"] = config.graph_write_rate_limit
    built: dict[str, Emulator] = {}
    for name, kwargs in options.items():
        factory = FACTORIES[name]
        accepted = set(inspect.signature(factory).parameters)
        bad = set(kwargs) - accepted
        if bad:
            raise StackConfigError(f"{name}: unknown options {sorted(bad)} (accepted: {sorted(accepted)})")
        built[name] = factory(clock=clock, fault_seed=config.fault_seed, **kwargs)
    return built


def load_seed(spec: str | dict[str, Any] | None) -> dict[str, Any]:
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return spec
    if spec == "demo":
        return demo_seed()
    return json.loads(Path(spec).read_text(encoding="utf-8"))


def apply_seed(emulators: dict[str, Emulator], seed: dict[str, Any]) -> None:
    """Seed each running emulator with its section; sections for emulators not in the stack are skipped."""
    for name, emulator in emulators.items():
        if name in seed:
            emulator.seed(seed[name])


def write_tls_outputs(emulators: dict[str, Emulator], config: StackConfig) -> None:
    entra = emulators.get("entra")
    if not isinstance(entra, EntraEmulator):
        return
    if config.entra_ca_out:
        entra.write_ca_pem(config.entra_ca_out)
    if config.entra_ca_bundle_out:
        entra.write_ca_bundle(config.entra_ca_bundle_out)


@dataclass
class ThreadedStack:
    """In-process variant for test fixtures: every emulator on its own thread."""

    emulators: dict[str, Emulator]
    running: dict[str, RunningEmulator] = field(default_factory=dict)

    @classmethod
    def start(cls, config: StackConfig) -> ThreadedStack:
        emulators = build_emulators(config)
        apply_seed(emulators, load_seed(config.seed))
        write_tls_outputs(emulators, config)
        stack = cls(emulators)
        try:
            for name, emulator in emulators.items():
                stack.running[name] = emulator.start(port=config.ports.get(name, 0))
        except BaseException:
            stack.stop()
            raise
        return stack

    @property
    def urls(self) -> dict[str, str]:
        return {name: running.url for name, running in self.running.items()}

    def stop(self) -> None:
        for running in self.running.values():
            running.stop()

    def __enter__(self) -> ThreadedStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
