"""The README and .env.example stay true: every setting is documented, every linked file exists."""

from __future__ import annotations

import re
from pathlib import Path

from services.cli import build_parser
from services.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()


def aliases() -> list[str]:
    return [str(f.validation_alias.choices[0]) for f in Settings.model_fields.values()]  # type: ignore[union-attr]


def test_every_setting_is_in_the_configuration_table():
    missing = [a for a in aliases() if f"`{a}`" not in README]
    assert not missing, missing


def test_every_setting_is_in_env_example():
    missing = [a for a in aliases() if not re.search(rf"^#? ?{re.escape(a)}=", ENV_EXAMPLE, re.M)]
    assert not missing, missing


def test_env_example_values_load_and_are_fake():
    values = dict(line.split("=", 1) for line in ENV_EXAMPLE.splitlines() if line and not line.startswith("#"))
    settings = Settings(_env_file=None, **{k: v for k, v in values.items()})  # type: ignore[arg-type]
    assert settings.app_id == "00000000-0000-0000-0000-000000000000"
    assert all("fake" in v or v.startswith(("0000", "https://", "19:", "svc_", "production", "servicenow"))
               for k, v in values.items() if any(s in k for s in ("SECRET", "PASSWORD", "KEY")))


def test_linked_files_exist():
    for link in re.findall(r"\]\(((?:docs|\.env)[^)#]*)\)", README):
        assert (ROOT / link).exists(), link


def test_every_command_is_documented():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in commands:
        assert f"breakglass {name}" in README, name
