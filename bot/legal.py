"""/privacy and /terms: the pages the Teams manifest links to (privacyUrl, termsOfUseUrl). Plain text, so an
operator's file is shown exactly as written: privacy.txt and terms.txt in BREAKGLASS_LEGAL_DIR replace the shipped
text in bot/legal/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

from services.settings import Settings

PAGES = {"/privacy": "privacy.txt", "/terms": "terms.txt"}


def page_text(settings: Settings, name: str) -> str:
    if settings.legal_dir is not None:
        own = Path(settings.legal_dir) / name
        if own.is_file():
            return own.read_text(encoding="utf-8")
    return resources.files("bot").joinpath("legal", name).read_text(encoding="utf-8")


def add_routes(app: web.Application, settings: Settings) -> None:
    for path, name in PAGES.items():
        # Read once at start-up: the pages are public and must never become a way to read other files.
        body = page_text(settings, name)

        async def page(_: web.Request, body: str = body) -> web.Response:
            return web.Response(text=body, content_type="text/plain", charset="utf-8",
                                headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"})

        app.router.add_get(path, page)
