"""The embedded Redis keeps requests, the audit log and scheduled revocations on disk (issue 16, item 11): its data
directory is 0700 and every file in it 0600, whatever the umask of the process that started it (and so of the
redis-server child that writes the RDB snapshot and the AOF)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.state.redis_conn import connect_embedded, embedded_db_path


@pytest.fixture()
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default: files 0644, directories 0755
    try:
        yield
    finally:
        os.umask(previous)


def exposed(root: Path) -> list[str]:
    """Everything under `root` (and `root` itself) that a group or other user could read, write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return found


def wait_until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_fresh_embedded_start_leaves_no_group_or_other_bits(tmp_path, loose_umask):
    data = tmp_path / "state"
    client = connect_embedded(data)
    try:
        client.set("bg:req:BG-TEST01", b"x" * 1000)
        client.bgsave()
        wait_until(lambda: embedded_db_path(data).exists() and not client.info("persistence")["rdb_bgsave_in_progress"])
        client.bgrewriteaof()
        wait_until(lambda: not client.info("persistence")["aof_rewrite_in_progress"]
                   and not client.info("persistence")["aof_rewrite_scheduled"])
        client.set("bg:req:BG-TEST02", b"y")  # appended to the rewritten AOF
        names = {p.name for p in data.rglob("*")}
        assert "breakglass.db" in names and ("appendonly.aof" in names or "appendonlydir" in names), names
        assert exposed(data) == []
    finally:
        client.shutdown(nosave=True)


def test_an_existing_loose_data_directory_is_tightened_at_start(tmp_path, loose_umask):
    data = tmp_path / "state"
    (data / "redis").mkdir(parents=True)
    data.chmod(0o755)
    (data / "redis").chmod(0o755)
    (data / "redis" / "appendonly.aof").write_bytes(b"")
    (data / "redis" / "appendonly.aof").chmod(0o644)
    client = connect_embedded(data)
    try:
        client.set("k", "v")
        assert exposed(data) == []
    finally:
        client.shutdown(nosave=True)
