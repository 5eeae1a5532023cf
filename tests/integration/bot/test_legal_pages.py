"""The Teams manifest's privacyUrl and termsOfUseUrl must resolve: the bot serves /privacy and /terms (shipped text,
or the operator's own files), or the manifest points at the operator's own pages."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from bot.app import create_app
from bot.manifest import manifest_dict
from tests.integration.bot.conftest import serving

PUBLIC = {"app_id": "bbbbbbbb-0000-0000-0000-000000000001", "public_base_url": "https://breakglass.contoso.com"}


async def test_the_manifests_privacy_and_terms_urls_are_served_by_the_bot(product):
    developer = manifest_dict(product.settings.model_copy(update=PUBLIC))["developer"]
    async with serving(create_app(product.settings, product.services)) as client:
        for key in ("privacyUrl", "termsOfUseUrl"):
            url = urlparse(developer[key])
            assert url.scheme == "https" and url.hostname == "breakglass.contoso.com"
            response = await client.get(url.path)
            assert response.status == 200, key
            assert response.headers["Content-Type"].startswith("text/plain")
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "breakglass" in await response.text()


async def test_the_operator_edits_the_pages_text(product, tmp_path: Path):
    (tmp_path / "privacy.txt").write_text("Contoso: what we keep about your elevation requests.\n")
    (tmp_path / "terms.txt").write_text("Contoso: acceptable use of emergency access.\n")
    settings = product.settings.model_copy(update={"legal_dir": tmp_path})
    async with serving(create_app(settings, product.services)) as client:
        assert "Contoso: what we keep" in await (await client.get("/privacy")).text()
        assert "Contoso: acceptable use" in await (await client.get("/terms")).text()


def test_the_manifest_can_point_at_the_operators_own_pages(product):
    settings = product.settings.model_copy(update={**PUBLIC, "privacy_url": "https://contoso.com/privacy",
                                                   "terms_url": "https://contoso.com/it-terms"})
    developer = manifest_dict(settings)["developer"]
    assert developer["privacyUrl"] == "https://contoso.com/privacy"
    assert developer["termsOfUseUrl"] == "https://contoso.com/it-terms"


@pytest.mark.parametrize("bad", ["http://contoso.com/privacy", "javascript:alert(1)", "https://"])
def test_the_operators_page_urls_must_be_https(product, bad):
    from services.settings import ConfigurationError

    settings = product.settings.model_copy(update={**PUBLIC, "privacy_url": bad})
    with pytest.raises(ConfigurationError, match="BREAKGLASS_PRIVACY_URL"):
        manifest_dict(settings)
