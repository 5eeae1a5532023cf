"""`breakglass worker` and `breakglass scheduler` (contributed through the breakglass.commands entry point)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run an RQ worker for grant, revoke and receipt jobs")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    isolation = worker.add_mutually_exclusive_group()
    isolation.add_argument("--fork", action="store_true",
                           help="run each job in a forked work horse: isolated from the worker, ~15 ms slower")
    isolation.add_argument("--no-fork", action="store_true", help="run jobs in the worker process (the default)")
    worker.add_argument("--name", help="worker name (default: breakglass-<host>-<pid>)")
    worker.set_defaults(func=_worker)
    scheduler = sub.add_parser("scheduler", help="run rq-scheduler (1 s interval): timed revocations, reconciler")
    scheduler.add_argument("--burst", action="store_true", help="enqueue what is due once and exit")
    scheduler.set_defaults(func=_scheduler)


def _worker(args: argparse.Namespace) -> int:
    from jobs.worker import run_worker
    return run_worker(burst=args.burst, fork=args.fork, name=args.name)


def _scheduler(args: argparse.Namespace) -> int:
    from jobs.worker import run_scheduler
    return run_scheduler(burst=args.burst)
