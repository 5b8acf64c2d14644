"""A fake EMG board on a pseudo-terminal, run as its own process by the serial end-to-end test.

    python tests/pty_writer.py --csv emg.csv --link /tmp/x/ttyEMG --rate 3000 \\
        --fault garbage@1500 --fault jump@10500 --unplug-at 14000 --unplug-s 1.0

It opens a pty pair, puts the slave in raw mode and points ``--link`` (a symlink, replaced
atomically) at the slave, then streams the CSV's EMG1..EMG3 as ``n,v1,v2,v3\\n`` lines with a
uint32 counter at ``--rate`` lines/s, in small batches paced by ``time.monotonic`` (no drift).

Faults, ``--fault KIND@ROW`` (ROW: CSV row index; the fault goes right before that row):

* ``garbage``: the extra line ``\\x00\\xff#!garbage\\n`` (rejected as not_ascii);
* ``partial``: the first half of the row's line without a newline, then the full line: the
  two glue into one line with too many fields (field_count), so that row is lost;
* ``field_count``: an extra line with one field too many;
* ``not_a_number``: an extra line with a non-number;
* ``out_of_range``: an extra line with a value far above any ADC range;
* ``jump``: rows ROW..ROW+6 and their 7 counter values are skipped (``--jump`` to change 7).

``--unplug-at ROW``: before that row, remove the symlink and close both ends of the pty (the
reader sees EIO), wait ``--unplug-s``, open a NEW pty pair, re-point the symlink and go on with
the same row and counter (the board kept running; only the cable was out).

Stdout, one flushed line each, every time from ``time.monotonic()`` (the same clock as the
test process on this machine): ``READY <t> <link> <slave>``, ``STREAMING <t>``,
``FAULT <kind> <row> <t>``, ``UNPLUG <t>``, ``REPLUG <t> <slave>``, ``DONE <t> <lines>``.
After DONE the pty stays open for ``--linger-s`` seconds (or until SIGTERM), then the symlink
is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import os
import signal
import sys
import time
import tty
from pathlib import Path
from types import FrameType

COUNTER_MODULUS = 1 << 32
GARBAGE = b"\x00\xff#!garbage\n"
FAULT_KINDS = ("garbage", "partial", "field_count", "not_a_number", "out_of_range", "jump")
RETRY_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EIO, errno.EINTR)


def say(*words: object) -> None:
    print(*words, flush=True)


def fmt(value: float) -> bytes:
    return f"{value:g}".encode()


def load_rows(path: Path) -> list[tuple[bytes, bytes, bytes]]:
    with path.open(newline="") as f:
        return [
            (fmt(float(r["EMG1"])), fmt(float(r["EMG2"])), fmt(float(r["EMG3"]))) for r in csv.DictReader(f)
        ]


class Pty:
    """One pty pair whose slave ``link`` points at; both ends are ours until :meth:`close`."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.name = os.ttyname(self.slave)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.name)
        os.replace(tmp, link)  # atomic: a reader never sees a half-made link

    def write(self, data: bytes) -> None:
        """Write all of ``data``: a full buffer (nobody reading) or EIO is waited out, never fatal."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except OSError as exc:
                if exc.errno not in RETRY_ERRNOS:
                    raise
                time.sleep(0.001)
                continue
            view = view[n:]

    def close(self) -> None:
        """Close both ends (idempotent: an fd number is never closed twice)."""
        fds, self.master, self.slave = (self.master, self.slave), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def parse_faults(specs: list[str]) -> dict[int, list[str]]:
    faults: dict[int, list[str]] = {}
    for spec in specs:
        kind, sep, row = spec.partition("@")
        if not sep or kind not in FAULT_KINDS or not row.isdigit():
            raise SystemExit(f"bad --fault {spec!r}: want KIND@ROW with KIND in {', '.join(FAULT_KINDS)}")
        faults.setdefault(int(row), []).append(kind)
    return faults


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, required=True, help="CSV with columns EMG1,EMG2,EMG3")
    ap.add_argument("--link", type=Path, required=True, help="symlink to point at the pty slave")
    ap.add_argument("--rate", type=float, default=2000.0, help="lines per second")
    ap.add_argument("--batch-s", type=float, default=0.005, help="seconds between writes")
    ap.add_argument("--counter-start", type=int, default=0, help="first counter value (wraps at 2**32)")
    ap.add_argument("--rows", type=int, default=None, help="stream only the first ROWS rows")
    ap.add_argument("--fault", action="append", default=[], metavar="KIND@ROW")
    ap.add_argument("--jump", type=int, default=7, help="counter values (and rows) a jump skips")
    ap.add_argument("--unplug-at", type=int, default=None, metavar="ROW")
    ap.add_argument("--unplug-s", type=float, default=1.0)
    ap.add_argument("--linger-s", type=float, default=30.0, help="keep the pty open this long after DONE")
    ap.add_argument("--wait-for-go", action="store_true", help="stream only after a line on stdin")
    args = ap.parse_args(argv)

    rows = load_rows(args.csv)[: args.rows]
    faults = parse_faults(args.fault)
    link: Path = args.link

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    pty = Pty(link)
    try:
        say("READY", time.monotonic(), link, pty.name)
        if args.wait_for_go:
            sys.stdin.readline()
        t0 = time.monotonic()  # when row 0 was due; moved on by the time spent unplugged
        say("STREAMING", t0)
        row, counter, sent = 0, args.counter_start % COUNTER_MODULUS, 0
        unplug_at: int | None = args.unplug_at
        next_tick = t0
        while row < len(rows):
            if unplug_at is not None and row >= unplug_at:
                unplug_at = None
                link.unlink(missing_ok=True)  # first, so nobody opens a dead (or reused) pts
                pty.close()
                t_unplug = time.monotonic()
                say("UNPLUG", t_unplug)
                time.sleep(args.unplug_s)
                pty = Pty(link)
                t_replug = time.monotonic()
                say("REPLUG", t_replug, pty.name)
                t0 += t_replug - t_unplug
                next_tick = t_replug
            # Every row whose time has come, up to the unplug; the schedule is absolute (no drift).
            due = min(len(rows), int((time.monotonic() - t0) * args.rate) + 1)
            if unplug_at is not None:
                due = min(due, unplug_at)
            out: list[bytes] = []
            while row < due:
                v1, v2, v3 = rows[row]
                line = b"%d,%s,%s,%s\n" % (counter, v1, v2, v3)
                skip = 0
                for kind in faults.pop(row, []):
                    say("FAULT", kind, row, time.monotonic())
                    if kind == "garbage":
                        out.append(GARBAGE)
                    elif kind == "partial":
                        out.append(line[: len(line) // 2])
                    elif kind == "field_count":
                        out.append(b"%d,%s,%s,%s,0\n" % (counter, v1, v2, v3))
                    elif kind == "not_a_number":
                        out.append(b"%d,%s,abc,%s\n" % (counter, v1, v3))
                    elif kind == "out_of_range":
                        out.append(b"%d,%s,99999,%s\n" % (counter, v1, v3))
                    elif kind == "jump":
                        skip = args.jump
                if skip:  # these rows never leave the board
                    row += skip
                    counter = (counter + skip) % COUNTER_MODULUS
                    continue
                out.append(line)
                row += 1
                sent += 1
                counter = (counter + 1) % COUNTER_MODULUS
            if out:
                pty.write(b"".join(out))
            next_tick += args.batch_s
            time.sleep(max(0.0, next_tick - time.monotonic()))
        say("DONE", time.monotonic(), sent)
        time.sleep(args.linger_s)
    finally:
        link.unlink(missing_ok=True)
        pty.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
