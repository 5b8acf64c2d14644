from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from edge.outbox import AsyncOutbox, Outbox


def _payload(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def test_seq_increases_across_reopen_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, max_events=100, max_age_s=3600)
    seqs = [ob.append("t", _payload) for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert [json.loads(r.payload)["seq"] for r in ob.pending()] == [1, 2, 3]
    assert ob.ack(1) and ob.ack(2) and ob.ack(3)
    assert not ob.ack(3)
    ob.close()
    ob = Outbox(path, max_events=100, max_age_s=3600)
    # Everything was deleted, yet a reopened outbox never reuses a seq.
    assert ob.append("t", _payload) == 4
    stats = ob.stats()
    assert {k: stats[k] for k in ("pending", "last_seq", "appended", "acked", "expired")} == {
        "pending": 1,
        "last_seq": 4,
        "appended": 4,
        "acked": 3,
        "expired": 0,
    }


def test_wal_mode_and_full_sync(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", 10, 60)
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_pending_is_ordered_and_paged(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", 100, 3600)
    for _ in range(10):
        ob.append("t", _payload)
    ob.ack(3)
    first = ob.pending(limit=4)
    assert [r.seq for r in first] == [1, 2, 4, 5]
    assert [r.seq for r in ob.pending(after_seq=first[-1].seq)] == [6, 7, 8, 9, 10]


def test_bounded_by_count_and_age_with_counters(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", max_events=5, max_age_s=100)
    for i in range(8):
        ob.append("t", _payload, now=1000.0 + i)
    assert [r.seq for r in ob.pending()] == [4, 5, 6, 7, 8]
    assert ob.stats()["expired"] == 3
    # Seqs 4..8 were created at 1003..1007; at 1104.5 the first two are older than 100 s.
    assert ob.expire(now=1104.5) == 2
    assert [r.seq for r in ob.pending()] == [6, 7, 8]
    assert ob.stats()["expired"] == 5


def test_committed_event_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 10, 60)
    ob.append("topic/x", _payload)
    # No close(): a second connection (as after SIGKILL) sees the committed row.
    rows = sqlite3.connect(path).execute("SELECT seq, topic FROM events").fetchall()
    assert rows == [(1, "topic/x")]


def test_settings_persist(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 10, 60)
    assert ob.load_settings("switches") == {}
    ob.save_settings("switches", {"privacy": True})
    ob.close()
    assert Outbox(path, 10, 60).load_settings("switches") == {"privacy": True}


class _Statements:
    """Every SQL statement a connection runs (from whichever thread runs it)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.seen: list[str] = []
        db.set_trace_callback(self.seen.append)

    def count(self, prefix: str) -> int:
        return sum(s.strip().upper().startswith(prefix) for s in self.seen)


def test_append_does_not_count_the_backlog(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", 100_000, 3600)
    for _ in range(50):
        ob.append("t", _payload)
    trace = _Statements(ob._db)
    ob.append("t", _payload)
    assert not [s for s in trace.seen if "COUNT(" in s.upper()], "O(1): no COUNT(*) per append"
    assert trace.count("COMMIT") == 1


def test_counts_kept_in_memory_match_the_table(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, max_events=50, max_age_s=100)
    for i in range(80):
        ob.append("t", _payload, now=1000.0 + i)  # 1..30 overflow
    assert ob.ack_many(range(31, 41)) == set(range(31, 41))
    assert ob.ack(45) and not ob.ack(45)
    assert ob.expire(now=1150.0) == 9  # created before 1050: seqs 41..50 less the acked 45

    def table_count() -> int:
        return int(sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0])

    assert ob.stats()["pending"] == table_count() == 30
    assert ob.stats()["expired"] == 30 + 9 and ob.stats()["acked"] == 11
    ob.close()
    assert Outbox(path, 50, 100).stats()["pending"] == 30


def test_acks_arriving_together_share_one_transaction(tmp_path: Path) -> None:
    async def main() -> None:
        ob = AsyncOutbox(tmp_path / "o.sqlite3", 10_000, 3600)
        seqs = [await ob.append("t", _payload) for _ in range(500)]
        trace = _Statements(ob._outbox._db)
        # As the MQTT link does it: one task per PUBACK, all arriving close together.
        assert all(await asyncio.gather(*(ob.ack(s) for s in seqs)))
        assert (await ob.stats())["pending"] == 0  # stats() counts every ack received so far
        assert trace.count("COMMIT") <= 2, f"{trace.count('COMMIT')} transactions for 500 acks"
        await ob.close()

    asyncio.run(main())


def test_an_ack_can_wait_for_its_commit(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"

    async def main() -> None:
        ob = AsyncOutbox(path, 100, 3600)
        seq = await ob.append("t", _payload)
        assert await ob.ack(seq, wait=True)
        assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
        assert not await ob.ack(seq, wait=True), "no longer pending"
        await ob.close()
        assert not await ob.ack(seq + 1), "closed"

    asyncio.run(main())


def test_acks_received_before_a_clean_close_are_all_written(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"

    async def main() -> None:
        ob = AsyncOutbox(path, 1000, 3600, ack_delay_s=5.0)
        seqs = [await ob.append("t", _payload) for _ in range(20)]
        acks = [asyncio.ensure_future(ob.ack(s)) for s in seqs]
        await asyncio.sleep(0)  # the acks are received, their batch waits for ack_delay_s
        assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0] == 20
        await ob.close()
        assert all(await asyncio.gather(*acks))

    asyncio.run(main())
    assert Outbox(path, 1000, 3600).pending() == [], "nothing acknowledged is sent again"


def test_after_a_crash_only_the_unwritten_acks_are_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"

    async def main() -> None:
        ob = AsyncOutbox(path, 1000, 3600, ack_delay_s=5.0)
        seqs = [await ob.append("t", _payload) for _ in range(10)]
        first = asyncio.gather(*(ob.ack(s) for s in seqs[:5]))
        await asyncio.sleep(0)
        await ob.flush_acks()
        assert all(await first)
        later = [asyncio.ensure_future(ob.ack(s)) for s in seqs[5:]]
        await asyncio.sleep(0)
        # A crash now (a second connection sees what a restart would): only the unwritten acks'
        # events are still there, to be sent again.
        rows = sqlite3.connect(path).execute("SELECT seq FROM events ORDER BY seq").fetchall()
        assert [r[0] for r in rows] == seqs[5:]
        # Not handed out again meanwhile, e.g. to a link that starts over after a reload.
        assert await ob.pending(after_seq=0) == []
        await ob.close()
        assert all(await asyncio.gather(*later))

    asyncio.run(main())


def test_the_file_shrinks_after_a_backlog_drains(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, 100_000, 3600)
    assert ob._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    seqs = [ob.append("t", lambda seq: b"x" * 3000) for _ in range(600)]
    ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    full = path.stat().st_size
    assert ob.ack_many(seqs) == set(seqs)
    assert ob.maintain() > 0
    assert path.stat().st_size < full / 10, (path.stat().st_size, full)
    assert ob.append("t", _payload) == 601


def test_an_old_database_keeps_its_seq_and_gets_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
                             payload BLOB NOT NULL, created REAL NOT NULL);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO events (seq, topic, payload, created) VALUES (7, 't', x'00', 1.0);
        INSERT INTO counters VALUES ('appended', 7);
        INSERT INTO settings VALUES ('switches', '{"privacy": true}');
        """
    )
    db.commit()
    db.close()
    ob = Outbox(path, 100, 1e9)
    assert ob._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert [r.seq for r in ob.pending()] == [7]
    assert ob.append("t", _payload) == 8
    assert ob.stats()["appended"] == 8 and ob.stats()["file_lost"] == 0
    assert ob.load_settings("switches") == {"privacy": True}
