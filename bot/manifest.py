"""`breakglass manifest build`: the Teams app package (manifest.json + two icons) for upload."""

from __future__ import annotations

import json
import re
import uuid
import zipfile
from importlib import resources
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from services.settings import ConfigurationError, Settings

DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9-]{1,63}\.)+[a-z]{2,63}$", re.I)


def manifest_dict(settings: Settings, version: str | None = None) -> dict[str, Any]:
    problems = []
    try:
        app_id = str(uuid.UUID(settings.app_id))
    except ValueError:
        app_id = ""
        problems.append("MicrosoftAppId must be the bot's Entra application (client) id, a GUID")
    domain = urlparse(settings.public_base_url or "").hostname or ""
    if not DOMAIN.match(domain):
        problems.append("BREAKGLASS_PUBLIC_URL must be the bot's public https URL, e.g. https://breakglass.contoso.com")
    for name, value in (("BREAKGLASS_PRIVACY_URL", settings.privacy_url), ("BREAKGLASS_TERMS_URL", settings.terms_url)):
        parsed = urlparse(value or "")
        if value is not None and not (parsed.scheme == "https" and DOMAIN.match(parsed.hostname or "")):
            problems.append(f"{name} must be an https URL with a host name, e.g. https://contoso.com/privacy")
    if problems:
        raise ConfigurationError(problems)
    text = resources.files("manifest").joinpath("manifest.template.json").read_text(encoding="utf-8")
    filled = (text.replace("{{APP_ID}}", app_id).replace("{{DOMAIN}}", domain)
              .replace("{{VERSION}}", version or package_version("breakglass")))
    manifest = json.loads(filled)
    # Unset: the bot serves /privacy and /terms itself (bot/legal.py), so the template's URLs resolve.
    if settings.privacy_url:
        manifest["developer"]["privacyUrl"] = settings.privacy_url
    if settings.terms_url:
        manifest["developer"]["termsOfUseUrl"] = settings.terms_url
    return manifest


def build_package(settings: Settings, out: Path, version: str | None = None) -> Path:
    manifest = manifest_dict(settings, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    icons = resources.files("manifest")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2))
        zf.writestr("color.png", icons.joinpath("color.png").read_bytes())
        zf.writestr("outline.png", icons.joinpath("outline.png").read_bytes())
    return out
