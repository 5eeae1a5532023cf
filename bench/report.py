"""The report table (Markdown, so the same text goes into README's "Performance" section)."""

from __future__ import annotations

import math
from typing import Any

from bench.core import Row
from bench.stats import summary

DIGITS = {"ms": 1, "s": 2, "MB": 1, "/s": 0, "count": 0, "×": 2}


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    digits = DIGITS.get(unit, 2)
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit not in {"count", "×"} else (f"{text}×" if unit == "×" else text)


def render_table(rows: list[Row], result: dict[str, Any]) -> str:
    lines = ["| Measurement | n | median | p99 | min–max | × floor (p50 / p99) | Goal | Result |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        s = summary(row.values)
        ratio = (f"{row.floor_ratio['p50']:.1f}× / {row.floor_ratio['p99']:.1f}×" if row.floor_ratio else "—")
        verdict = "—" if row.passed is None else ("PASS" if row.passed else "**MISS**")
        span = f"{fmt(s['min'], row.unit)} – {fmt(s['max'], row.unit)}" if s["n"] else "—"
        lines.append(f"| {row.title} | {s['n']} | {fmt(s['median'], row.unit)} | {fmt(s['p99'], row.unit)} | "
                     f"{span} | {ratio} | {row.goal} | {verdict} |")
    m = result["machine"]
    cpu = result["cpu"]["whole_run"]
    lines += ["", f"{'Quick' if result['quick'] else 'Full'} run, {result['duration_s'] / 60:.1f} min, "
              f"{result['started'][:16]} UTC; {m['cores']} cores ({m['cpu'] or 'unknown CPU'}), "
              f"{m['memory_gb']} GB, Python {m['python']}. This run used {cpu['ours_cores']:.2f} cores on average; "
              f"other processes on the machine used {cpu['others_cores']:.2f}."]
    return "\n".join(lines)
