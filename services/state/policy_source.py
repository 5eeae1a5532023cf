"""Reads the policy file and keeps it current: a changed file is picked up on the next decision or click,
so removing an approver from the policy takes effect immediately. A broken edit never replaces a good policy."""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path

from policies.document import PolicyDocument, PolicyError, Problem, parse_policy

log = logging.getLogger(__name__)


def default_policy_path() -> Path:
    return Path(str(resources.files("policies").joinpath("default.yaml")))


def read_policy(path: Path | None = None) -> PolicyDocument:
    source = path or default_policy_path()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        problem = Problem(path="", message=f"cannot read the policy file: {exc.strerror}")
        raise PolicyError(str(source), [problem]) from exc
    return parse_policy(text, str(source))


class PolicySource:
    def __init__(self, path: Path | None = None):
        self.path = path or default_policy_path()
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self._policy = read_policy(self.path)
        self.last_error: str | None = None

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
            self._policy = read_policy(self.path)
            self.last_error = None
            log.info("policy reloaded", extra={"policy_file": str(self.path), "digest": self._policy.digest()})
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error("policy reload failed; keeping the previous policy", extra={"error": str(exc)})
