"""Structured logs: one JSON object per line, with request ids where known; secrets and tokens never logged."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import sys
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from services.settings import Settings

# Credentials are masked wherever text leaves the process (log lines, `doctor`): bearer and Basic tokens, JWTs,
# secrets and passwords as key=value, "key": "value" or URL-encoded form fields, and the password of any URL
# (redis://:pw@, rediss://user:pw@, https://user:pw@). The value stops at a backslash, so a JSON-escaped quote is
# never swallowed and redacting a JSON log line keeps it JSON.
_KEYS = (r"client[_-]?secret|app[_-]?password|password|passwd|pwd|api[-_]?key|client_assertion|access_token"
         r"|refresh_token|id_token|secret")
_KEY_VALUE = re.compile(
    rf"(?i)(?P<key>\b(?:{_KEYS})(?:\\?[\"'])?\s*(?:[=:]|%3[dD])\s*)"
    r"(?P<value>\\\"(?:[^\\]|\\[^\"])*?\\\"|\"[^\"]*\"|'[^']*'|(?:[^\s&\"',;}\\%]|%(?!26|3[bB]|2[cC]))+)")
_AUTHORIZATION = re.compile(r"(?i)(authorization(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?\s*"
                            r"(?:basic|bearer|digest|negotiate|ntlm)?\s*)[^\s\"',;}\\]+")
_BASIC = re.compile(r"(?i)\b(basic\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s\"'\\]*:)[^@\s/\"'\\]+@")
_REDIS_USERINFO = re.compile(r"(?i)\b(rediss?://)(?![^/@\s]*:)[^/@\s\"'\\]+@")
_SECRETS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), "[redacted-jwt]"),
    (_AUTHORIZATION, r"\1[redacted]"),
    (_URL_PASSWORD, r"\1[redacted]@"),
    (_REDIS_USERINFO, r"\1[redacted]@"),
]
REDACTED = "[redacted]"
# Every pattern above needs one of these words: most log lines (one per HTTP request) contain none, and skip the
# dozen substitutions after one search.
_TRIGGER = re.compile(r"(?i)bearer|eyj|basic|authorization|://|secret|passw|pwd|api[-_]?key|assertion|_token")


def _key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.startswith('\\"'):
        return f'{match.group("key")}\\"{REDACTED}\\"'
    if value[:1] in {'"', "'"}:
        return f"{match.group('key')}{value[0]}{REDACTED}{value[0]}"
    return match.group("key") + REDACTED


def _basic(match: re.Match[str]) -> str:
    """`Basic <base64 of user:password>`; other words after "basic" ("basic setup") are left alone."""
    token = match.group(2)
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return match.group(1) + REDACTED if b":" in decoded else match.group(0)


def redact(text: str) -> str:
    if not _TRIGGER.search(text):
        return text
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    text = _BASIC.sub(_basic, text)
    return _KEY_VALUE.sub(_key_value, text)


def redact_value(value: Any) -> Any:
    """Strings redacted, containers walked (extra={"facts": {...}}), anything else left as it is."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


_PLAIN = {"msg", "args", "name", "levelname", "levelno", "pathname", "filename", "module", "funcName",
          "processName", "threadName", "lineno", "created", "msecs", "relativeCreated", "thread", "process",
          "exc_info", "exc_text", "stack_info", "taskName"}


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # The message is rendered here, once: an argument that is not a string (an exception, a dict) would
        # otherwise be formatted after redaction.
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for key, value in list(record.__dict__.items()):
            if key not in _PLAIN:
                record.__dict__[key] = redact_value(value)
        return True


def rfc3339_utc(created: float) -> str:
    """`2026-12-05T16:13:17.738Z`: what log pipelines parse without a format hint."""
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((created - whole) * 1000):03d}Z"


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339_utc(record.created)


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339_utc(record.created)


class RedactingFormatter(logging.Formatter):
    """Redacts the finished line too: tracebacks and anything a filter cannot see are formatted last."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        formatter: logging.Formatter = _JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    else:
        formatter = _TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(formatter))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for noisy in ("msal", "urllib3", "botframework", "msrest", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
