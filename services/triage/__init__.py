"""Triage: turn a requester's free text into a typed Suggestion that prefills the intake form.

AI never executes anything here. A provider returns a Suggestion (or None); `prefill` is the only path from a
suggestion to form values, and it re-checks each value against the requester's eligibility and the policy.
This package imports only the standard library, pydantic, aiohttp and `policies`.
"""

from services.triage.factory import FallbackTriage, build_triage
from services.triage.llm import DEFAULT_AZURE_API_VERSION, DEFAULT_MODEL, OpenAITriage, system_prompt
from services.triage.model import PrefillResult, Suggestion, TriageProvider
from services.triage.prefill import max_minutes, prefill
from services.triage.rules import KNOWN_ROLES, RulesTriage

__all__ = [
    "DEFAULT_AZURE_API_VERSION",
    "DEFAULT_MODEL",
    "KNOWN_ROLES",
    "FallbackTriage",
    "OpenAITriage",
    "PrefillResult",
    "RulesTriage",
    "Suggestion",
    "TriageProvider",
    "build_triage",
    "max_minutes",
    "prefill",
    "system_prompt",
]
