"""`python -m bench [--quick] [--only NAME,...] [--out bench/results/latest.json]`: run the measurements, print
the table, write the JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.core import FULL, QUICK, Ctx, Row
from bench.env import ROOT, Stack
from bench.m_expiry import measure_burst, measure_lateness, measure_scale
from bench.m_latency import measure_ack, measure_floor, measure_floor_and_approve
from bench.m_report import measure_report
from bench.m_scale import measure_ticks
from bench.m_service import measure_endpoint, measure_memory, measure_tokens
from bench.population import bench_seed
from bench.report import render_table
from bench.stats import percentile

Measure = Callable[[Ctx], list[Row]]
MEASUREMENTS: dict[str, tuple[Measure, list[str]]] = {
    "floor": (measure_floor, ["floor", "floor_warm"]),
    "approve": (measure_floor_and_approve, ["floor", "floor_warm", "approve_to_graph"]),
    "ack": (measure_ack, ["invoke_ack"]),
    "lateness": (measure_lateness, ["lateness_staggered"]),
    "scale": (measure_scale, ["lateness_10k", "redis_memory_10k"]),
    "burst": (measure_burst, ["burst_expiry"]),
    "ticks": (measure_ticks, ["tick_scheduler_ratio", "tick_reconciler_ratio"]),
    "endpoint": (measure_endpoint, ["endpoint_valid_capacity", "endpoint_valid_latency", "endpoint_invalid"]),
    "memory": (measure_memory, ["memory_bot", "memory_worker"]),
    "tokens": (measure_tokens, ["token_requests"]),
    "report": (measure_report, ["usage_report"]),
}
ORDER = ["approve", "ack", "endpoint", "memory", "tokens", "burst", "ticks", "scale", "lateness", "report"]
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.json"


class CpuMonitor:
    """How much of the machine this run used, and how much everyone else did (a noise indicator)."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.t0 = time.monotonic()
        self.busy0 = self._busy()
        self.ours0 = self._ours()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def _ours(self) -> float:
        total = 0.0
        procs = [self.me]
        try:
            procs += self.me.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def read(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        cores = psutil.cpu_count() or 1
        busy = self._busy() - self.busy0
        ours = self._ours() - self.ours0
        others = max(0.0, busy - ours)
        return {"wall_s": round(wall, 1), "ours_cores": round(ours / wall, 2) if wall else 0.0,
                "others_cores": round(others / wall, 2) if wall else 0.0, "cores": cores,
                "loadavg_1m": round(os.getloadavg()[0], 2)}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every measurement at reduced size (CI: ~2-3 min)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, Redis, emulator seed)")
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'quiet machine')")
    parser.add_argument("--multihost", action="store_true",
                        help="only the multi-host rows: two app hosts and Redis in network namespaces, 1 ms RTT")
    parser.add_argument("--fork", action="store_true",
                        help="run the workers with --fork (a work horse per job); default: jobs in the worker process")
    return parser.parse_args(argv)


def _stop(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # Stop cleanly (every child process, the temporary directory) on SIGTERM, and on SIGINT even when started in
    # the background (where SIGINT is ignored by default).
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    chosen = [n.strip() for n in (args.only or ",".join(ORDER)).split(",") if n.strip()]
    unknown = [n for n in chosen if n not in MEASUREMENTS]
    if unknown:
        print(f"unknown measurement(s): {', '.join(unknown)} (known: {', '.join(MEASUREMENTS)})", file=sys.stderr)
        return 2
    # The floor is measured in every run that has latency rows: ratios are always to this run's floor.
    if "approve" not in chosen and "floor" not in chosen:
        chosen.insert(0, "floor")
    order = [n for n in ["floor", *ORDER] if n in chosen]
    if "approve" in order and "floor" in order:
        order.remove("floor")
    if args.multihost:
        return run_multihost(args, argv)
    sizes = QUICK if args.quick else FULL
    began = time.monotonic()
    started = datetime.now(UTC)

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.0f}s] {message}", flush=True)

    stack = Stack(keep=args.keep, seed=bench_seed(sizes.users))
    if args.fork:
        stack.product.worker_args.append("--fork")
    rows: list[Row] = []
    errors: dict[str, str] = {}
    load: dict[str, dict[str, float]] = {}
    whole = CpuMonitor()
    log(f"work directory {stack.workdir} ({'quick' if args.quick else 'full'} run: {', '.join(order)})")
    try:
        stack.start()
        ctx = Ctx(stack=stack, sizes=sizes, quick=args.quick, log=log)
        for name in order:
            measure, _ = MEASUREMENTS[name]
            log(f"{name} ...")
            monitor = CpuMonitor()
            try:
                rows += measure(ctx)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                log(f"{name} FAILED: {errors[name]}")
                traceback.print_exc()
            load[name] = monitor.read()
            log(f"{name} done in {load[name]['wall_s']:.0f}s (others used {load[name]['others_cores']:.2f} of "
                f"{load[name]['cores']} cores)")
    finally:
        stack.stop()
    for row in rows:
        # These rows are measured under load, when nothing idles: their yardstick is the warm floor.
        if ctx.floor_warm and row.key in {"invoke_ack", "endpoint_valid_latency"} and row.values:
            row.floor_ratio = {"p50": percentile(row.values, 50) / percentile(ctx.floor_warm, 50),
                               "p99": percentile(row.values, 99) / percentile(ctx.floor_warm, 99)}
    missing = [key for name in order for key in MEASUREMENTS[name][1] if key not in {r.key for r in rows}]
    result = {
        "started": started.isoformat(), "duration_s": round(time.monotonic() - began, 1), "quick": args.quick,
        "label": args.label, "workers": "fork" if args.fork else "in-process",
        "command": " ".join([".venv/bin/python -m bench", *(argv or sys.argv[1:])]),
        "machine": machine(), "cpu": {"whole_run": whole.read(), "by_measurement": load},
        "measurements": order, "errors": errors, "missing_rows": missing, "rows": [r.to_json() for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print()
    print(render_table(rows, result))
    print(f"\nJSON: {args.out}")
    if errors or missing:
        print(f"\nFAILED measurements: {errors or missing}", file=sys.stderr)
        return 1
    return 0


def run_multihost(args: argparse.Namespace, argv: list[str] | None) -> int:
    from bench.m_multihost import measure_multihost
    from bench.netns import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"multi-host mode cannot run here: {reason}", file=sys.stderr)
        return 2
    began = time.monotonic()
    started = datetime.now(UTC)
    whole = CpuMonitor()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.0f}s] {message}", flush=True)

    log(f"multi-host mode ({'quick' if args.quick else 'full'})")
    rows, meta = measure_multihost(args.quick, log)
    result = {
        "started": started.isoformat(), "duration_s": round(time.monotonic() - began, 1), "quick": args.quick,
        "label": args.label, "mode": "multihost", "delay": meta.get("delay"),
        "command": " ".join([".venv/bin/python -m bench", *(argv or sys.argv[1:])]),
        "machine": machine(), "cpu": {"whole_run": whole.read()}, "rows": [r.to_json() for r in rows],
    }
    out = args.out if args.out != DEFAULT_OUT else DEFAULT_OUT.with_name("multihost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print()
    print(render_table(rows, result))
    print(f"\nRedis delay: {meta.get('delay')}\nJSON: {out}")
    return 0
