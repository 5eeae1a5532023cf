"""`breakglass dev --triage openai`: the OpenAI-compatible emulator is started with the others and the product's
triage points at it; without the flag no triage setting from the developer's shell leaks into the stack."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from services.ops.cli import build_parser
from services.ops.devstack import DEMO_OPENAI_KEY, READY, DevConfig, DevStack

ROOT = Path(__file__).resolve().parents[2]


def test_the_flag_is_parsed() -> None:
    args = build_parser().parse_args(["dev", "--triage", "openai"])
    assert args.triage == "openai"
    assert build_parser().parse_args(["dev"]).triage == "rules"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dev", "--triage", "gpt-anything"])


def test_openai_mode_starts_the_emulator_and_points_triage_at_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_API_KEY", "sk-real-key-from-the-developers-shell")
    stack = DevStack(DevConfig(data_dir=tmp_path, triage="openai"))
    argv = stack.emulator_argv()
    assert argv[argv.index("--emulators") + 1].split(",")[-1] == "openai"
    assert f"openai_api_key={DEMO_OPENAI_KEY}" in argv and "openai=3995" in argv
    stack.urls = {"entra": "https://127.0.0.1:1", "graph": "http://127.0.0.1:2", "servicenow": "http://127.0.0.1:3",
                  "botconnector": "http://127.0.0.1:4", "openai": "http://127.0.0.1:5"}
    env = stack._product_env("redis://127.0.0.1:6379/5")
    assert (env["BREAKGLASS_TRIAGE"], env["TRIAGE_BASE_URL"], env["TRIAGE_API_KEY"]) == (
        "openai", "http://127.0.0.1:5", DEMO_OPENAI_KEY)
    assert "OpenAI-compatible emulator (triage model)" in stack.describe()


def test_rules_mode_has_no_model_and_drops_triage_settings_from_the_shell(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_API_KEY", "sk-real-key-from-the-developers-shell")
    monkeypatch.setenv("TRIAGE_BASE_URL", "https://real-model.example")
    stack = DevStack(DevConfig(data_dir=tmp_path))
    argv = stack.emulator_argv()
    assert "openai" not in argv[argv.index("--emulators") + 1]
    stack.urls = {"entra": "https://127.0.0.1:1", "graph": "http://127.0.0.1:2", "servicenow": "http://127.0.0.1:3",
                  "botconnector": "http://127.0.0.1:4"}
    env = stack._product_env("redis://127.0.0.1:6379/5")
    assert not [k for k in env if k.startswith("TRIAGE_")] and "BREAKGLASS_TRIAGE" not in env


def test_the_emulator_process_serves_the_model_with_the_dev_key(tmp_path: Path) -> None:
    stack = DevStack(DevConfig(data_dir=tmp_path, triage="openai",
                               ports={k: 0 for k in ("entra", "graph", "servicenow", "botconnector", "openai")}))
    argv = stack.emulator_argv()
    argv[argv.index("--emulators") + 1] = "openai"  # only the model: the rest is not under test here
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=30), "the emulators printed nothing within 30 s"
        line = proc.stdout.readline()
        assert line.startswith(READY), line
        url = json.loads(line[len(READY):])["openai"]
        requests.post(url + "/_emulator/state", json={"content": json.dumps({"entitlement": "helpdesk-admin"})},
                      timeout=5)
        body = {"model": "m", "messages": [{"role": "user", "content": "reset a password"}]}
        ok = requests.post(url + "/v1/chat/completions", json=body, timeout=5,
                           headers={"Authorization": f"Bearer {DEMO_OPENAI_KEY}"})
        assert json.loads(ok.json()["choices"][0]["message"]["content"]) == {"entitlement": "helpdesk-admin"}
        assert requests.post(url + "/v1/chat/completions", json=body, timeout=5,
                             headers={"Authorization": "Bearer wrong"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert sys.executable in argv
