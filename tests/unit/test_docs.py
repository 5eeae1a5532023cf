"""The README and .env.example stay true: every setting is documented, every linked file exists."""

from __future__ import annotations

import re
from pathlib import Path

from services.ops.cli import build_parser
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


def test_the_layout_table_names_every_room_of_services():
    rooms = sorted(p.parent.name for p in (ROOT / "services").glob("*/__init__.py"))
    layout = README[README.index("## Layout"):README.index("## Dependency notes")]
    missing = [room for room in rooms if f"`services/{room}/`" not in layout]
    assert not missing, missing
    for room in rooms:  # each room says what lives there and what it may use
        doc = (ROOT / "services" / room / "__init__.py").read_text()
        assert doc.startswith('"""') and len(doc.split('"""')[1].strip()) > 40, room


def test_architecture_names_files_and_functions_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:bot|jobs|cards|policies|services)/[\w/]+\.py)`", text))
    assert len(paths) > 10
    missing = [p for p in sorted(paths) if not (ROOT / p).exists()]
    assert not missing, missing
    code = "\n".join(p.read_text() for d in ("bot", "jobs", "cards", "policies", "services")
                     for p in (ROOT / d).rglob("*.py"))
    names = set(re.findall(r"`([A-Z]\w+)\.(\w+)`", text))
    assert len(names) > 10
    unknown = [f"{cls}.{attr}" for cls, attr in sorted(names)
               if not re.search(rf"^class {cls}\b", code, re.M) or not re.search(rf"def {attr}\b", code)]
    assert not unknown, unknown
    functions = set(re.findall(r"`([a-z]\w+_\w+)`", text))
    unknown = [f for f in sorted(functions) if not re.search(rf"def {f}\b", code)]
    assert not unknown, unknown


def test_the_dev_banner_prints_the_pinned_playground_command_of_the_playground_guide():
    from services.ops.devstack import playground_command

    guide = (ROOT / "docs" / "playground.md").read_text()
    assert playground_command("http://127.0.0.1:3978") in guide
    assert "docs/playground/node_modules/.bin/agentsplayground" in playground_command("http://127.0.0.1:4000")
    assert "-e http://127.0.0.1:4000/api/messages" in playground_command("http://127.0.0.1:4000")


def test_dev_and_demo_take_the_same_port_flags():
    from services.ops.devstack import ports_from

    parser = build_parser()
    dev = parser.parse_args(["dev", "--base-port", "4100"])
    demo = parser.parse_args(["demo", "--base-port", "4100"])
    expected = {"bot": 4100, "entra": 4113, "graph": 4114, "servicenow": 4115, "botconnector": 4116, "openai": 4117,
                "metrics": 4118}
    assert ports_from(dev) == ports_from(demo) == expected
    one = parser.parse_args(["dev", "--graph-port", "5000", "--port", "5001"])
    assert ports_from(one)["graph"] == 5000 and ports_from(one)["bot"] == 5001 and ports_from(one)["entra"] == 3991
    assert ports_from(parser.parse_args(["demo", "--graph-port", "5000"]))["graph"] == 5000
