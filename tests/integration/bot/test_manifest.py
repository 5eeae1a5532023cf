"""`breakglass manifest build` produces a package Teams accepts: schema 1.22, the app id, the domain, the icons."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "MicrosoftTeams.schema.v1.22.json").read_text())
APP_ID = "bbbbbbbb-0000-0000-0000-000000000001"


def build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("Microsoft", "BREAKGLASS_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "services.ops.cli", "manifest", "build", "--out",
                           str(tmp_path / "app.zip")], env=full, cwd=ROOT, capture_output=True, text=True, timeout=60)


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert (depth, color) == (8, 6), "RGBA 8-bit expected"
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 4 + 1
    pixels = []
    for row in range(height):
        line = raw[row * stride + 1:(row + 1) * stride]  # the icons use filter 0 (none) on every row
        pixels += [tuple(line[i:i + 4]) for i in range(0, len(line), 4)]
    return width, height, pixels


def test_package_validates_against_the_1_22_schema(tmp_path):
    result = build(tmp_path, MicrosoftAppId=APP_ID, BREAKGLASS_PUBLIC_URL="https://breakglass.contoso.example")
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / "app.zip") as zf:
        assert sorted(zf.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(zf.read("manifest.json"))
        color, outline = zf.read("color.png"), zf.read("outline.png")
    errors = list(jsonschema.Draft4Validator(SCHEMA).iter_errors(manifest))
    assert not errors, [e.message for e in errors[:5]]
    assert manifest["id"] == APP_ID and manifest["bots"][0]["botId"] == APP_ID
    assert manifest["validDomains"] == ["breakglass.contoso.example"]
    assert set(manifest["bots"][0]["scopes"]) == {"personal", "team"}
    assert {c["title"] for c in manifest["bots"][0]["commandLists"][0]["commands"]} >= {"help", "status", "pending"}
    w, h, _ = png_pixels(color)
    assert (w, h) == (192, 192)
    w, h, pixels = png_pixels(outline)
    assert (w, h) == (32, 32)
    assert all(p[3] == 0 or p[:3] == (255, 255, 255) for p in pixels), "outline must be white on transparent"
    assert any(p[3] == 0 for p in pixels) and any(p[3] == 255 for p in pixels)


def test_build_refuses_without_app_id_or_domain(tmp_path):
    result = build(tmp_path)
    assert result.returncode == 2
    assert "MicrosoftAppId" in result.stderr and "BREAKGLASS_PUBLIC_URL" in result.stderr
    assert "Traceback" not in result.stderr
