"""Cost of parsing one serial read of EMG lines into a (lines, 3) float array.

    python -m bench.serial_parse [--rates 1000 4000] [--batches 250] [--baseline-rev HEAD]

One read is what the reader gets every 20 ms (serial_emg.BATCH_S): 20 lines at 1 kHz, 80 at
4 kHz, in the board's ``n,v1,v2,v3`` shape. Each implementation parses the same reads, timed in
thread CPU time, twice: back to back ("hot") and 20 ms apart ("cold", as in the daemon, where
caches have gone cold by the next read; on a small VM that is several times the hot cost).

* ``line_protocol`` (vectorised): LineParser.feed_batch, the reader's path;
* ``line_protocol`` line by line: the same parser with ``vectorised=False``;
* peer: the parser at ``--baseline-rev`` (line by line, then ``np.array`` of the rows, as the
  reader at that revision did), when given.

"% of one core" is the cold cost per read x reads per second.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import print_table, summarize
from edge.sources.line_protocol import LineParser
from edge.sources.serial_emg import BATCH_S

REPO = Path(__file__).resolve().parent.parent


def reads(rate: float, count: int, seed: int = 0) -> list[bytes]:
    """``count`` reads of BATCH_S at ``rate`` lines/s, with a uint32 counter that wraps midway."""
    rng = random.Random(seed)
    per_read = round(rate * BATCH_S)
    counter = (1 << 32) - per_read * count // 2
    out = []
    for _ in range(count):
        lines = []
        for _ in range(per_read):
            v1, v2, v3 = (rng.randrange(1024) for _ in range(3))
            lines.append(f"{counter % (1 << 32)},{v1},{v2},{v3}\n")
            counter += 1
        out.append("".join(lines).encode())
    return out


def baseline_parser_class(rev: str) -> Any:
    source = subprocess.run(
        ["git", "show", f"{rev}:edge/sources/line_protocol.py"], cwd=REPO, capture_output=True, check=True
    ).stdout
    module = types.ModuleType("_baseline_line_protocol")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:edge/sources/line_protocol.py", "exec"), module.__dict__)
    return module.LineParser


def time_reads(parse: Callable[[bytes], object], data: list[bytes], pause_s: float) -> list[int]:
    """Thread CPU ns per read, after a warm-up of 20 reads; ``pause_s`` between reads."""
    for chunk in data[:20]:
        parse(chunk)
    out = []
    for chunk in data[20:]:
        if pause_s:
            time.sleep(pause_s)
        t0 = time.thread_time_ns()
        parse(chunk)
        out.append(time.thread_time_ns() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[1000.0, 4000.0], help="lines per second")
    ap.add_argument("--batches", type=int, default=250, help="reads per implementation and mode")
    ap.add_argument("--baseline-rev", help="also time the parser at this git revision")
    args = ap.parse_args()

    implementations: list[tuple[str, Callable[[], Callable[[bytes], object]]]] = []

    def fresh(vectorised: bool) -> Callable[[bytes], object]:
        parser = LineParser(3, 0, 1023, vectorised=vectorised)
        parser.feed(b"\n")
        return parser.feed_batch

    implementations.append(("line_protocol, vectorised", lambda: fresh(True)))
    implementations.append(("line_protocol, line by line", lambda: fresh(False)))
    if args.baseline_rev:
        old_class = baseline_parser_class(args.baseline_rev)

        def old() -> Callable[[bytes], object]:
            parser = old_class(3, 0, 1023)
            parser.feed(b"\n")

            def parse(data: bytes) -> object:
                rows = parser.feed(data)
                return np.array([r.values for r in rows], dtype=np.float64)

            return parse

        implementations.append((f"peer: parser at {args.baseline_rev}", old))

    for rate in args.rates:
        data = reads(rate, args.batches + 20)
        print(f"\n{rate:g} lines/s: one read = {round(rate * BATCH_S)} lines, {len(data[0])} bytes")
        rows = []
        summary = []
        for name, make in implementations:
            hot = summarize(f"{name} (hot)", time_reads(make(), data, 0.0))
            cold = summarize(f"{name} (cold)", time_reads(make(), data, BATCH_S))
            rows += [hot, cold]
            summary.append((name, cold["median_us"] / BATCH_S / 1e4))
        print_table(rows)
        for name, percent in summary:
            print(f"  {name:40s} {percent:.2f}% of one core (cold median x {1 / BATCH_S:g} reads/s)")


if __name__ == "__main__":
    main()
