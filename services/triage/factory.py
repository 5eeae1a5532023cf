"""build_triage: the configured provider; FallbackTriage keeps the form prefilled when the LLM fails."""

from __future__ import annotations

import logging

from policies.document import PolicyDocument
from services.triage.llm import OpenAITriage
from services.triage.merge import merge
from services.triage.model import Suggestion, TriageProvider
from services.triage.rules import RulesTriage

log = logging.getLogger("breakglass.triage")

RULES_NAMES = frozenset({"rules", "rule", "off", "none", "default", ""})
OPENAI_NAMES = frozenset({"openai", "llm", "openai-compatible"})
AZURE_NAMES = frozenset({"azure", "azure-openai", "azure_openai", "azureopenai"})


class FallbackTriage:
    """The model (`primary`) fills only what the rules (`fallback`) did not find in the person's message; when the
    model returns nothing usable or misbehaves, the rules' result stands alone."""

    def __init__(self, primary: TriageProvider, fallback: TriageProvider) -> None:
        self.primary = primary
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"FallbackTriage(primary={self.primary!r}, fallback={self.fallback!r})"

    async def suggest(self, text: str, policy: PolicyDocument) -> Suggestion | None:
        try:
            s = await self.primary.suggest(text, policy)
        except Exception as exc:  # noqa: BLE001 - a provider that breaks its contract must not break intake
            log.warning("triage provider %s raised %s; using %s", type(self.primary).__name__,
                        type(exc).__name__, type(self.fallback).__name__)
            s = None
        return merge(await self.fallback.suggest(text, policy), s)


def build_triage(provider: str, *, base_url: str | None, api_key: str | None, deployment: str | None,
                 api_version: str | None, timeout_s: float) -> TriageProvider:
    """`rules` (default) or `openai` / `azure`. An LLM provider falls back to the rules whenever it fails.

    Raises ValueError for a configuration that cannot work, so a misconfiguration shows at startup (the
    message never contains the API key).
    """
    name = (provider or "").strip().lower()
    if name in RULES_NAMES:
        return RulesTriage()
    if name not in OPENAI_NAMES | AZURE_NAMES:
        raise ValueError(f"unknown triage provider {provider!r}: use rules, openai or azure")
    if not base_url:
        raise ValueError(f"triage provider {name!r} needs a base URL")
    if name in AZURE_NAMES:
        if not deployment:
            raise ValueError(f"triage provider {name!r} needs a deployment name")
        if not api_key:
            raise ValueError(f"triage provider {name!r} needs an API key")
    llm = OpenAITriage(base_url=base_url, api_key=api_key, deployment=deployment or None,
                       api_version=api_version, timeout_s=timeout_s)
    return FallbackTriage(llm, RulesTriage())
