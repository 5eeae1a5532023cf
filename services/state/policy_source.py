"""Reads the policy file and keeps it current: a changed file is picked up on the next decision or click,
so removing an approver from the policy takes effect immediately. A broken edit never replaces a good policy."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from policies.document import PolicyDocument, PolicyError, Problem, parse_policy

log = logging.getLogger(__name__)


def default_policy_path() -> Path:
    return Path(str(resources.files("policies").joinpath("default.yaml")))


def read_policy_text(path: Path | None = None) -> tuple[str, str]:
    """(text, source name) of the policy file."""
    source = path or default_policy_path()
    try:
        return source.read_text(encoding="utf-8"), str(source)
    except OSError as exc:
        problem = Problem(path="", message=f"cannot read the policy file: {exc.strerror}")
        raise PolicyError(str(source), [problem]) from exc


def read_policy(path: Path | None = None) -> PolicyDocument:
    return parse_policy(*read_policy_text(path))


PolicyListener = Callable[[PolicyDocument, PolicyDocument], None]


class PolicySource:
    def __init__(self, path: Path | None = None, listeners: list[PolicyListener] | None = None):
        self.path = path or default_policy_path()
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self._policy = read_policy(self.path)
        self.last_error: str | None = None
        # Called with (previous, new) after a reload that changed the policy (the composition root audits it).
        self.listeners: list[PolicyListener] = listeners if listeners is not None else []

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return -1

    def current(self) -> PolicyDocument:
        mtime = self._stat()
        if mtime != self._mtime:
            with self._lock:
                if mtime != self._mtime:
                    self._reload(mtime)
        return self._policy

    def _reload(self, mtime: float) -> None:
        self._mtime = mtime
        try:
            new = read_policy(self.path)
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error("policy reload failed; keeping the previous policy", extra={"error": str(exc)})
            return
        previous, self._policy = self._policy, new
        self.last_error = None
        log.info("policy reloaded", extra={"policy_file": str(self.path), "digest": new.digest()})
        if new.digest() == previous.digest():
            return
        for listener in list(self.listeners):
            try:
                listener(previous, new)
            except Exception:  # the new policy applies whatever a listener does
                log.exception("policy change listener failed")
