"""Latency summaries shared by the benchmark scripts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import Any

import numpy as np


def summarize(name: str, samples_ns: Sequence[int]) -> dict[str, Any]:
    arr = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {
        "name": name,
        "n": len(arr),
        "median_us": float(np.median(arr)),
        "p99_us": float(np.percentile(arr, 99)),
        "mean_us": float(arr.mean()),
        "per_s": float(1e6 / arr.mean()),
    }


def time_each(fn: Callable[[Any], object], items: Sequence[Any], repeats: int, warmup: int = 20) -> list[int]:
    """Time ``fn(item)`` once per item, ``repeats`` passes over ``items``."""
    for item in items[:warmup]:
        fn(item)
    out = []
    for _ in range(repeats):
        for item in items:
            t0 = perf_counter_ns()
            fn(item)
            out.append(perf_counter_ns() - t0)
    return out


def print_table(rows: Sequence[dict[str, Any]], unit: str = "us") -> None:
    print(f"{'implementation':48s} {'n':>7s} {'median ' + unit:>12s} {'p99 ' + unit:>10s} {'per s':>10s}")
    for r in rows:
        print(f"{r['name']:48s} {r['n']:7d} {r['median_us']:12.1f} {r['p99_us']:10.1f} {r['per_s']:10.0f}")
