"""What storage does to the outbox: a damaged file, a full disk, a lost file.

Full disks are real: SQLite's own limit (``PRAGMA max_page_count``, runs everywhere) and a small
tmpfs filled to the last byte (needs the right to mount; skipped where there is none).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox import AsyncOutbox, Outbox
from tests.harness import Daemon, Mosquitto, Subscriber, daemon_config, replay_emg, wait_until

BASE = "emotion_edge/test_pi"
EVENTS = f"{BASE}/event"
STATS = f"{BASE}/stats"


def _payload(seq: int) -> bytes:
    return json.dumps({"seq": seq, "pad": "x" * 200}).encode()


def table_seqs(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [int(r[0]) for r in db.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        db.close()


def damage_pages(path: Path, seed: int = 1) -> None:
    """Random bytes over the second half of the pages (the events' leaves); header and schema intact."""
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big") or 65536
    pages = len(data) // page
    assert pages >= 12, f"too small to damage realistically: {pages} pages"
    rng = random.Random(seed)
    with path.open("r+b") as f:
        for n in range(pages // 2, pages):
            f.seek(n * page)
            f.write(rng.randbytes(page))


def filled_outbox(path: Path, n: int = 300) -> list[int]:
    ob = Outbox(path, 100_000, 1e9)
    seqs = [ob.append("t", _payload) for _ in range(n)]
    ob.close()  # the last connection checkpoints: everything is in the main file
    assert not Path(f"{path}-wal").exists()
    return seqs


def corrupt_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


# --- 1. a damaged file --------------------------------------------------------------------


def test_a_damaged_file_is_moved_aside_at_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite3"
    seqs = filled_outbox(path)
    damage_pages(path)
    damaged = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="edge.outbox"):
        ob = Outbox(path, 100_000, 1e9)
        assert ob.pending() == []  # today: "database disk image is malformed"
    [kept] = corrupt_copies(path)
    assert kept.read_bytes() == damaged, "the damaged file is kept, untouched, for inspection"
    assert any(r.levelno == logging.ERROR and "damaged" in r.getMessage() for r in caplog.records)
    assert ob.stats()["corrupt_recovered"] == 1
    # A new file, and seq does not go back.
    new = ob.append("t", _payload)
    assert new > seqs[-1]
    assert [r.seq for r in ob.pending()] == [new]
    ob.close()
    assert Outbox(path, 100_000, 1e9).stats()["corrupt_recovered"] == 1, "counted on disk too"


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    last = filled_outbox(path, 20)[-1]
    with path.open("r+b") as f:
        f.write(b"\xff" * 100)  # the header itself
    ob = Outbox(path, 100, 1e9)
    assert len(corrupt_copies(path)) == 1 and ob.stats()["corrupt_recovered"] == 1
    assert ob.append("t", _payload) > last


def test_damage_found_while_running_is_recovered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 100_000, 1e9)
    ob.save_settings("switches", {"privacy": True})
    seqs = [ob.append("t", _payload) for _ in range(300)]
    ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    damage_pages(path)  # the card rots under the running daemon
    ob._db.execute("PRAGMA shrink_memory")  # drop cached pages: the next read goes to the file
    with caplog.at_level(logging.ERROR, logger="edge.outbox"):
        assert ob.pending() == []  # today it raises, and the publishing task dies with it
    assert len(corrupt_copies(path)) == 1
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert ob.stats()["corrupt_recovered"] == 1
    assert ob.append("t", _payload) == seqs[-1] + 1, "seq continues where it was"
    assert ob.load_settings("switches") == {"privacy": True}, "settings survive the damage"
    assert ob.stats()["appended"] == 301, "counters survive the damage"


def test_an_async_drain_keeps_going_after_damage(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "o.sqlite3"
    filled_outbox(path)

    async def main() -> None:
        # Damaged after opening (quick_check passed), found by the publisher's query.
        ob = AsyncOutbox(path, 100_000, 1e9)
        damage_pages(path)
        ob._outbox._db.execute("PRAGMA shrink_memory")
        assert await ob.pending() == []
        seq = await ob.append("t", _payload)
        assert [r.seq for r in await ob.pending()] == [seq]
        assert await ob.ack(seq, wait=True)
        assert (await ob.stats())["pending"] == 0
        await ob.close()

    asyncio.run(main())


# --- 2. a full disk -----------------------------------------------------------------------


def test_a_full_database_keeps_events_in_memory_and_writes_them_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's own limit: with max_page_count reached, writes fail with SQLITE_FULL for real."""
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 100_000, 1e9)
    ob.retry_interval_s = 0.0
    ob.append("t", _payload)
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count = {pages}")
    seqs = []
    with caplog.at_level(logging.ERROR, logger="edge.outbox"):
        for _ in range(200):  # today: sqlite3.OperationalError: database or disk is full
            seqs.append(ob.append("t", _payload))
    stats = ob.stats()
    assert stats["in_memory"] > 0 and stats["buffered_in_memory"] > 0 and stats["storage_errors"] > 0
    assert sum("failed" in r.getMessage() for r in caplog.records) == 1, "logged once per outage"
    # Kept events are still handed out, in order, after those on disk.
    assert [r.seq for r in ob.pending(limit=1000)] == [1, *seqs]
    assert ob.ack(seqs[-1]) and ob.stats()["pending"] == len(seqs)
    # Space again: the next append writes everything kept, in order.
    ob._db.execute("PRAGMA max_page_count = 1000000")
    last = ob.append("t", _payload)
    assert ob.stats()["in_memory"] == 0
    assert table_seqs(path) == [1, *seqs[:-1], last]


def test_the_memory_buffer_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 100_000, 1e9)
    ob.memory_max_events, ob.retry_interval_s = 5, 3600.0
    ob._db.execute("PRAGMA max_page_count = 1")  # nothing more fits
    seqs = [ob.append("t", lambda seq: b"x" * 5000) for _ in range(8)]
    stats = ob.stats()
    assert stats["in_memory"] == 5 and stats["dropped_memory_full"] == 3
    assert [r.seq for r in ob.pending()] == seqs[3:], "the oldest gave way"
    ob._db.execute("PRAGMA max_page_count = 1000000")
    assert ob.flush() == 5
    assert table_seqs(path) == seqs[3:]


@contextlib.contextmanager
def small_disk(where: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (root with CAP_SYS_ADMIN), unmounted afterwards."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        reason = done.stderr.strip()
        pytest.skip(f"cannot mount a small tmpfs here ({reason}); the max_page_count tests cover it")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the file system says ENOSPC; returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
        os.fsync(fd)
    finally:
        os.close(fd)
    return filler


def test_a_really_full_disk_then_space_again(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        path = disk / "o.sqlite3"
        ob = Outbox(path, 100_000, 1e9)
        ob.memory_max_events = 300
        ob.retry_interval_s = 0.0
        before = [ob.append("t", _payload) for _ in range(5)]
        filler = fill(disk)
        seqs = []
        for _ in range(2000):  # today: sqlite3.OperationalError: database or disk is full
            seqs.append(ob.append("t", _payload))
            if ob.stats()["in_memory"] >= 10:
                break
        assert ob.stats()["in_memory"] >= 10, "the disk never refused"
        # An ack the disk refuses to record still counts: not pending, not handed out again,
        # also after a retry that fails too.
        assert ob.ack(before[0])
        pending = ob.stats()["pending"]
        ob.flush()
        assert before[0] not in [r.seq for r in ob.pending(limit=10_000)]
        assert ob.stats()["pending"] == pending
        filler.unlink()
        ob.flush()
        stats = ob.stats()
        assert stats["in_memory"] == 0 and stats["dropped_memory_full"] == 0
        ob.close()
        assert table_seqs(path) == [*before[1:], *seqs], "all kept events written, in order"


def test_the_daemon_keeps_publishing_through_a_full_disk(tmp_path: Path, emg_csv: Path) -> None:
    with small_disk(tmp_path / "disk", size="2m") as disk:
        broker = Mosquitto(tmp_path / "broker").start()
        sub = Subscriber(broker.port, [EVENTS, STATS])
        config = daemon_config(tmp_path, broker.port, emg=replay_emg(emg_csv, speed=8, loop=True))
        outbox = disk / "outbox.sqlite3"
        config.write_text(config.read_text().replace(str(tmp_path / "outbox.sqlite3"), str(outbox)))
        daemon = Daemon(config, tmp_path)

        def outbox_stats() -> dict[str, int]:
            last = sub.last(STATS)
            return json.loads(last)["outbox"] if last else {}

        def seqs() -> list[int]:
            return [e["seq"] for e in sub.json_on(EVENTS)]

        try:
            sub.wait_for(EVENTS, lambda m: len(m) >= 3, timeout=30)
            filler = fill(disk)
            wait_until(lambda: "disk is full" in daemon.log, 60, what="the disk refusing a write")
            n = max(seqs())
            # Today the EMG stage dies here; it must go on, publishing from memory.
            wait_until(lambda: max(seqs()) >= n + 5, 30, what="events while the disk is full")
            assert outbox_stats()["storage_errors"] > 0
            filler.unlink()
            n = max(seqs())
            wait_until(lambda: max(seqs()) >= n + 5, 30, what="events after space came back")
            assert daemon.stop() == 0
        finally:
            daemon.kill()
            sub.close()
            broker.stop()
        got = seqs()
        assert sorted(set(got)) == list(range(1, max(got) + 1)), "nothing lost"
        assert "outbox" in daemon.log and "Traceback" not in daemon.log
        assert table_seqs(outbox) == [], "every event was acknowledged before the clean stop"


# --- 3. a lost file -----------------------------------------------------------------------


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_lost_file_does_not_restart_seq(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 100, 1e9)
    seqs = [ob.append("t", _payload) for _ in range(3)]
    generation = ob.stats().get("generation")
    ob.close()
    remove_database(path)
    with caplog.at_level(logging.ERROR, logger="edge.outbox"):
        ob = Outbox(path, 100, 1e9)
        seq = ob.append("t", _payload)
    assert seq > seqs[-1], f"seq went back from {seqs[-1]} to {seq}"
    assert any(r.levelno == logging.ERROR and "missing" in r.getMessage() for r in caplog.records)
    assert ob.stats()["file_lost"] == 1
    assert ob.stats()["generation"] == generation, "the same seq space continues"
    # And again: every later start continues above everything handed out before.
    more = [ob.append("t", _payload) for _ in range(3)]
    ob.close()
    remove_database(path)
    assert Outbox(path, 100, 1e9).append("t", _payload) > more[-1]


def test_an_emptied_file_does_not_restart_seq(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 100, 1e9)
    last = [ob.append("t", _payload) for _ in range(3)][-1]
    ob.close()
    remove_database(path)
    path.write_bytes(b"")  # e.g. restored as an empty file
    assert Outbox(path, 100, 1e9).append("t", _payload) > last


def test_seq_stays_below_the_reservation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.outbox.sidecar.SEQ_RESERVE", 10)
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 1000, 1e9)
    for _ in range(35):
        seq = ob.append("t", _payload)
        reserved = json.loads(ob.meta_path.read_text())["reserved_seq"]
        assert seq <= reserved < seq + 10
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers, "written by rename, no temporary files left"
    ob.close()
    remove_database(path)
    assert Outbox(path, 1000, 1e9).append("t", _payload) > 35


def test_settings_survive_a_lost_file(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 10, 60)
    ob.save_settings("switches", {"privacy": True})
    ob.close()
    remove_database(path)
    assert Outbox(path, 10, 60).load_settings("switches") == {"privacy": True}


def test_losing_both_files_starts_a_new_generation(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 10, 60)
    ob.append("t", _payload)
    generation = ob.generation
    assert ob.stats()["generation"] == generation > 0
    ob.close()
    remove_database(path)
    ob.meta_path.unlink()
    # Nothing is left to continue from: seq starts over, in a newer generation, so consumers
    # deduplicating on (generation, seq) keep the new events.
    ob = Outbox(path, 10, 60)
    assert ob.append("t", _payload) == 1
    assert ob.generation > generation


# --- through the daemon -------------------------------------------------------------------


def test_the_daemon_publishes_despite_a_damaged_outbox(tmp_path: Path, emg_csv: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    old = filled_outbox(path)
    damage_pages(path)
    shutil.copy(path, tmp_path / "damaged.sqlite3")
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, [EVENTS, STATS])
    config = daemon_config(tmp_path, broker.port, emg=replay_emg(emg_csv, speed=8, loop=True))
    daemon = Daemon(config, tmp_path)
    try:
        # Today: connected, events appended, none sent ("database disk image is malformed").
        sub.wait_for(EVENTS, lambda m: len(m) >= 3, timeout=30)
        wait_until(lambda: b"corrupt_recovered" in (sub.last(STATS) or b""), 10, what="stats")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        sub.close()
        broker.stop()
    seqs = [e["seq"] for e in sub.json_on(EVENTS)]
    assert min(seqs) > old[-1], "seq continues above the damaged file's"
    assert json.loads(sub.last(STATS) or b"{}")["outbox"]["corrupt_recovered"] == 1
    log = daemon.log
    assert "ERROR" in log and "damaged" in log and "Traceback" not in log
    [kept] = corrupt_copies(path)
    assert kept.read_bytes() == (tmp_path / "damaged.sqlite3").read_bytes()
