"""Outbox benchmarks: this checkout's edge/outbox against an older one, in the same run.

    python -m bench.outbox [--backlog 100000] [--appends 300] [--old-ref HEAD] [--old-drain-s 20] [--mqtt]

The old implementation (``edge/outbox.py``, or the ``edge/outbox/`` package since the split) at
``<old-ref>`` is loaded from git as a separate module, so both run on the same machine, disk and
SQLite. Per implementation:

* append: ``Outbox.append`` latency (each one a durable commit) with 0, 10^4 and ``--backlog``
  events queued (median, p99): it should not grow with the backlog.
* drain: a backlog of ``--backlog`` events drained through :class:`AsyncOutbox` the way the MQTT
  link does it (at most 500 handed out, one ``ack`` task per PUBACK, PUBACKs arriving at once),
  events/s. An implementation slower than ``--old-drain-s`` is stopped there and its rate reported.
* with ``--mqtt``: the same drain through the real :class:`MqttLink` and a mosquitto broker.
* open: constructing the outbox with the backlog queued (the new one runs ``PRAGMA quick_check``).
* file: the database size full, after the drain, and after the upkeep (incremental vacuum).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.stats import print_table, summarize

REPO = Path(__file__).resolve().parent.parent
WINDOW = 500  # edge.publish.mqtt_link.MAX_UNACKED
TOPIC = "emotion_edge/bench/event"


def payload(seq: int) -> bytes:
    """About the size of a real episode event."""
    body = {
        "type": "update",
        "id": "b7f0c2e4",
        "emotion": "happy",
        "confidence": 0.71,
        "probs": {"angry": 0.02, "happy": 0.71, "neutral": 0.2, "sad": 0.07},
        "modalities": ["emg"],
        "ts": 1764547200.123,
        "sample": 123456,
        "device_id": "bench_pi",
        "seq": seq,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def git_show(ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def old_sources(ref: str) -> dict[str, str]:
    """The outbox at ``ref``: ``{"outbox_old.py": ...}`` (one module) or the files of the package."""
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{ref}:edge/outbox"], cwd=REPO, capture_output=True, text=True
    )
    names = [n for n in listed.stdout.split() if n.endswith(".py")] if listed.returncode == 0 else []
    if not names:
        return {"outbox_old.py": git_show(ref, "edge/outbox.py")}
    return {f"outbox_old/{n}": git_show(ref, f"edge/outbox/{n}") for n in names}


def new_sources(module: ModuleType) -> dict[str, str]:
    path = Path(str(module.__file__))
    if path.name != "__init__.py":
        return {"outbox_old.py": path.read_text()}
    return {f"outbox_old/{p.name}": p.read_text() for p in sorted(path.parent.glob("*.py"))}


def load_old(sources: dict[str, str], where: Path) -> ModuleType:
    """Load the old outbox as ``outbox_old`` (a package's modules import each other relatively)."""
    for name, text in sources.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    if "outbox_old.py" in sources:
        spec = importlib.util.spec_from_file_location("outbox_old", where / "outbox_old.py")
    else:
        package = where / "outbox_old"
        spec = importlib.util.spec_from_file_location(
            "outbox_old", package / "__init__.py", submodule_search_locations=[str(package)]
        )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["outbox_old"] = module
    spec.loader.exec_module(module)
    return module


def add_backlog(path: Path, n: int) -> None:
    """Queue ``n`` more events fast (one transaction, straight into the shared schema)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    now = time.time()
    db.executemany(
        "INSERT INTO events (seq, topic, payload, created) VALUES (?, ?, ?, ?)",
        ((s, TOPIC, payload(s), now) for s in range(top + 1, top + n + 1)),
    )
    db.execute("COMMIT")
    db.close()


def time_appends(mod: ModuleType, path: Path, n: int) -> list[int]:
    ob = mod.Outbox(path, 10**7, 1e9)
    for _ in range(10):  # warm-up
        ob.append(TOPIC, payload)
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        ob.append(TOPIC, payload)
        out.append(time.perf_counter_ns() - t0)
    ob.close()
    return out


async def drain_like_the_link(mod: ModuleType, path: Path, limit_s: float) -> tuple[int, float]:
    """Returns (events acknowledged and committed, seconds)."""
    ob = mod.AsyncOutbox(path, 10**7, 1e9)
    loop = asyncio.get_running_loop()
    inflight: set[int] = set()
    acks: set[asyncio.Task[Any]] = set()
    wake = asyncio.Event()
    committed = 0
    handed = 0

    async def ack(seq: int) -> None:
        nonlocal committed
        await ob.ack(seq)
        committed += 1

    def puback(seq: int) -> None:
        inflight.discard(seq)
        task = loop.create_task(ack(seq))
        acks.add(task)
        task.add_done_callback(acks.discard)
        wake.set()

    t0 = time.perf_counter()
    wake.set()
    while time.perf_counter() - t0 < limit_s:
        await wake.wait()
        wake.clear()
        room = WINDOW - len(inflight)
        if room <= 0:
            continue
        rows = await ob.pending(after_seq=handed, limit=room)
        if not rows and not inflight:
            break
        for row in rows:
            inflight.add(row.seq)
            handed = row.seq
            loop.call_soon(puback, row.seq)
        if len(rows) == room:
            wake.set()
    if acks:
        await asyncio.gather(*acks)
    seconds = time.perf_counter() - t0
    await ob.close()
    return committed, seconds


async def drain_through_mqtt(mod: ModuleType, path: Path, limit_s: float, port: int) -> tuple[int, float]:
    from edge.config.mqtt import MqttConfig
    from edge.publish.mqtt_link import MqttLink
    from edge.publish.topics import Topics
    from edge.tasks import Supervisor

    ob = mod.AsyncOutbox(path, 10**7, 1e9)
    start = (await ob.stats())["pending"]

    async def nothing() -> None:
        return None

    link = MqttLink(
        MqttConfig(host="127.0.0.1", port=port),
        Topics("emotion_edge", "bench", "homeassistant"),
        ob,
        "127.0.0.1",
        port,
        nothing,
        lambda topic, data: None,
        Supervisor(on_fatal=lambda why: None),
    )
    t0 = time.perf_counter()
    await link.start()
    left = start
    while left and time.perf_counter() - t0 < limit_s:
        await asyncio.sleep(0.05)
        left = (await ob.stats())["pending"]
    seconds = time.perf_counter() - t0
    await link.stop()
    await ob.close()
    return start - left, seconds


def db_size(path: Path) -> int:
    return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())


def bench(
    name: str, mod: ModuleType, work: Path, args: argparse.Namespace, port: int | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "append": [], "sizes": {}}
    path = work / name / "outbox.sqlite3"
    path.parent.mkdir(parents=True)
    queued = 0
    for level in sorted({0, 10_000, args.backlog}):
        if level > queued:
            mod.Outbox(path, 10**7, 1e9).close()
            add_backlog(path, level - queued)
        samples = time_appends(mod, path, args.appends)
        queued = level + args.appends + 10
        out["append"].append(summarize(f"{name}: append, {level:>6d} queued", samples))
    out["sizes"]["full"] = db_size(path)
    t0 = time.perf_counter()
    mod.Outbox(path, 10**7, 1e9).close()  # the new one runs PRAGMA quick_check here
    out["open_s"] = time.perf_counter() - t0
    # The link hands out the oldest first; the appended ones are at the end, so the backlog is ~queued.
    events, seconds = asyncio.run(drain_like_the_link(mod, path, args.old_drain_s if name == "old" else 3600))
    out["drain"] = (events, seconds, queued)
    out["sizes"]["drained"] = db_size(path)
    ob = mod.Outbox(path, 10**7, 1e9)
    while hasattr(ob, "maintain") and ob.maintain() > 0:  # the upkeep timer, run to its end
        pass
    ob.close()
    out["sizes"]["upkeep"] = db_size(path)
    if port is not None:
        mqtt_path = work / name / "mqtt.sqlite3"
        mod.Outbox(mqtt_path, 10**7, 1e9).close()
        add_backlog(mqtt_path, args.backlog)
        out["mqtt"] = asyncio.run(
            drain_through_mqtt(mod, mqtt_path, args.old_drain_s if name == "old" else 3600, port)
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--appends", type=int, default=300, help="appends timed per backlog level")
    ap.add_argument("--old-ref", default="HEAD", help="git revision of the old edge/outbox")
    ap.add_argument("--old-drain-s", type=float, default=20.0, help="stop the old drain after this long")
    ap.add_argument("--mqtt", action="store_true", help="also drain through MqttLink and mosquitto")
    ap.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    args = ap.parse_args()

    import edge.outbox as new

    work = Path(tempfile.mkdtemp(prefix="bench-outbox-", dir=args.dir))
    broker = None
    try:
        sources = old_sources(args.old_ref)
        old = load_old(sources, work)
        if sources == new_sources(new):
            print(f"note: {args.old_ref}'s outbox is this checkout's; pass --old-ref <older commit>")
        port = None
        if args.mqtt:
            from tests.harness import Mosquitto

            broker = Mosquitto(work / "broker").start()
            port = broker.port
        print(f"SQLite {sqlite3.sqlite_version}, databases in {work}")
        results = [bench("old", old, work, args, port), bench("new", new, work, args, port)]
        print()
        print_table([row for r in results for row in r["append"]])
        print()
        head = f"{'drain (link pattern, window 500)':48s} {'events':>8s} {'s':>8s} {'events/s':>10s}"
        print(f"{head} {'whole backlog':>14s}")
        for r in results:
            events, seconds, queued = r["drain"]
            rate = events / seconds
            print(f"{r['name']:48s} {events:8d} {seconds:8.1f} {rate:10.0f} {queued / rate:12.1f} s")
        if port is not None:
            print()
            print(f"{'drain through MqttLink + mosquitto':48s} {'events':>8s} {'s':>8s} {'events/s':>10s}")
            for r in results:
                events, seconds = r["mqtt"]
                print(f"{r['name']:48s} {events:8d} {seconds:8.1f} {events / seconds:10.0f}")
        print()
        print(f"{'open with the backlog queued':48s} {'s':>8s}")
        for r in results:
            print(f"{r['name']:48s} {r['open_s']:8.2f}")
        print()
        print(f"{'file size, MiB (db + wal)':48s} {'full':>8s} {'drained':>8s} {'upkeep':>8s}")
        for r in results:
            mib = [r["sizes"][k] / 2**20 for k in ("full", "drained", "upkeep")]
            print(f"{r['name']:48s} {mib[0]:8.1f} {mib[1]:8.1f} {mib[2]:8.1f}")
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
