"""EmgStage's clock: sample time anchored to time.monotonic(), kept there across gaps and rate error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from edge.decision import ModalityReading
from edge.emg.classifier import EmgClassifier
from edge.emg.stage import MAX_CLOCK_DRIFT_S, EmgStage
from edge.queues import CountingQueue
from edge.recording import load_recording
from edge.sources.chunk import SampleChunk
from tests.conftest import SHIPPED_EMG

RATE = 1000.0
CHUNK = 100


def run_stage(chunks: list[SampleChunk], anchored: bool = True) -> tuple[list[tuple[float, float]], EmgStage]:
    """(reading time, arrival time of its chunk) for every window."""
    classifier = EmgClassifier(SHIPPED_EMG)
    readings: list[tuple[float, float]] = []

    async def on_reading(reading: ModalityReading, chunk: SampleChunk) -> None:
        readings.append((reading.t, chunk.received_at))

    stage = EmgStage(
        classifier, classifier.window, RATE, on_reading, lambda: None, anchor_to_monotonic=anchored
    )

    async def main() -> None:
        queue: CountingQueue[SampleChunk] = CountingQueue(len(chunks) + 1)
        for c in chunks:
            await queue.put(c)
        task = asyncio.create_task(stage.run(queue))
        while stage.stats.chunks_done < len(chunks):
            await asyncio.sleep(0.001)
        task.cancel()
        stage.close()

    asyncio.run(main())
    return readings, stage


def chunks_from(
    emg_csv: Path, seconds_per_chunk: float, n: int, gap_at: int | None = None
) -> list[SampleChunk]:
    signal = load_recording(emg_csv).signal
    out, t = [], 1000.0
    for i in range(n):
        if i == gap_at:
            t += 5.0  # the board was unplugged for 5 s; its sample counter went on where it was
        t += seconds_per_chunk
        rows = signal[(i * CHUNK) % (len(signal) - CHUNK) :][:CHUNK]
        out.append(SampleChunk(rows, i * CHUNK, received_at=t, discontinuity=i == gap_at))
    return out


def test_board_rate_error_does_not_drift_the_clock(emg_csv: Path) -> None:
    # A board 2% slower than its nominal 1 kHz: 60 s of data arrive over 61.2 s.
    readings, stage = run_stage(chunks_from(emg_csv, 0.102, 600))
    lag = np.array([arrived - t for t, arrived in readings])
    assert np.abs(lag).max() <= MAX_CLOCK_DRIFT_S + 0.01
    assert stage.stats.clock_resyncs >= 3
    times = [t for t, _ in readings]
    assert times == sorted(times), "the resync only ever moves the clock forward for a slow board"


def test_a_gap_re_anchors_the_clock(emg_csv: Path) -> None:
    readings, stage = run_stage(chunks_from(emg_csv, 0.1, 100, gap_at=50))
    lag = np.array([arrived - t for t, arrived in readings])
    assert np.abs(lag).max() < 0.05, "readings after the outage carry the time they arrived"
    assert stage.stats.discontinuities == 2  # the start and the outage


def test_unanchored_replay_keeps_the_bare_sample_clock(emg_csv: Path) -> None:
    readings, stage = run_stage(chunks_from(emg_csv, 0.102, 100), anchored=False)
    assert stage.stats.clock_resyncs == 0
    window = EmgClassifier(SHIPPED_EMG).window
    assert readings[0][0] == window / RATE
