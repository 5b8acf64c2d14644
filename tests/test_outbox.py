from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from edge.outbox import Outbox


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
    assert ob.stats() == {"pending": 1, "last_seq": 4, "appended": 4, "acked": 3, "expired": 0}


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
