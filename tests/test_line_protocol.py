"""LineParser: the serial line protocol ``v1,v2,v3\\n`` / ``n,v1,v2,v3\\n`` and its error accounting."""

from __future__ import annotations

import random

import pytest

from edge.sources.line_protocol import COUNTER_MODULUS, MAX_LINE_BYTES, LineParser, ParsedLine

WRAP = COUNTER_MODULUS


def synced(value_min: float = 0.0, value_max: float = 1023.0, n_channels: int = 3) -> LineParser:
    """A parser past its first line: an empty first line syncs without being counted."""
    parser = LineParser(n_channels, value_min, value_max)
    assert parser.feed(b"\n") == []
    assert parser.stats.as_dict()["lines_rejected"] == 0
    return parser


def rows(parsed: list[ParsedLine]) -> list[tuple[tuple[float, ...], int]]:
    return [(p.values, p.gap_before) for p in parsed]


def counter_lines(*counters: int) -> bytes:
    return b"".join(b"%d,100,200,300\n" % c for c in counters)


# --- valid lines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "values"),
    [
        (b"100,200,300\n", (100.0, 200.0, 300.0)),
        (b"0,0,1023\n", (0.0, 0.0, 1023.0)),  # both ends of the range are valid
        (b"1.5,2.25,1e2\n", (1.5, 2.25, 100.0)),
        (b"100,200,300\r\n", (100.0, 200.0, 300.0)),  # Arduino println
        (b"  100, 200 ,300  \n", (100.0, 200.0, 300.0)),
        (b"7,100,200,300\n", (100.0, 200.0, 300.0)),  # with a counter
        (b"4294967295,1,2,3\r\n", (1.0, 2.0, 3.0)),  # the largest uint32 counter
    ],
)
def test_valid_line(line: bytes, values: tuple[float, ...]) -> None:
    parser = synced()
    assert rows(parser.feed(line)) == [(values, 0)]
    assert parser.stats.lines_ok == 1
    assert parser.stats.as_dict() == {
        "lines_ok": 1,
        "samples_lost": 0,
        "counter_jumps": 0,
        "counter_resets": 0,
        "lines_rejected": 0,
    }


def test_negative_values_when_the_range_allows_them() -> None:
    parser = synced(value_min=-512, value_max=511)
    assert rows(parser.feed(b"-512,0,511\n3,-1.5,2,-3\n")) == [
        ((-512.0, 0.0, 511.0), 0),
        ((-1.5, 2.0, -3.0), 0),
    ]


def test_several_lines_in_one_feed_and_a_pending_tail() -> None:
    parser = synced()
    out = parser.feed(b"1,2,3\n4,5,6\n7,8")
    assert rows(out) == [((1.0, 2.0, 3.0), 0), ((4.0, 5.0, 6.0), 0)]
    assert rows(parser.feed(b",9\n")) == [((7.0, 8.0, 9.0), 0)]


def test_channel_count_follows_the_parser() -> None:
    parser = synced(n_channels=2)
    assert rows(parser.feed(b"1,2\n5,1,2\n")) == [((1.0, 2.0), 0), ((1.0, 2.0), 0)]
    parser.feed(b"1,2,3,4\n")
    assert parser.stats.rejected == {"field_count": 1}


# --- (re)sync ------------------------------------------------------------------------------


def test_fresh_parser_drops_the_cut_first_line_as_partial() -> None:
    parser = LineParser(3, 0, 1023)
    assert rows(parser.feed(b"0,300\n1,2,3\n")) == [((1.0, 2.0, 3.0), 0)]
    assert parser.stats.rejected == {"partial": 1}
    assert parser.stats.lines_ok == 1


def test_first_line_is_dropped_even_if_it_looks_complete() -> None:
    # The parser cannot know where the port was opened: the first line is never trusted.
    parser = LineParser(3, 0, 1023)
    assert parser.feed(b"1,2,3\n") == []
    assert parser.stats.rejected == {"partial": 1}


def test_first_line_split_across_feeds_is_dropped_once() -> None:
    parser = LineParser(3, 0, 1023)
    assert parser.feed(b"00,3") == []
    assert parser.feed(b"00,400") == []
    assert rows(parser.feed(b"\n5,6,7\n")) == [((5.0, 6.0, 7.0), 0)]
    assert parser.stats.rejected == {"partial": 1}


def test_resync_forgets_pending_bytes_counter_history_and_drops_the_next_line() -> None:
    parser = synced()
    assert len(parser.feed(counter_lines(10, 11) + b"12,100,2")) == 2
    parser.resync()  # the port was reopened
    # "00,300" completes no old line: it is the cut first line of the new connection.
    out = parser.feed(b"00,300\n" + counter_lines(5000, 5001))
    # No jump or reset across the reconnect: the counter history was forgotten.
    assert rows(out) == [((100.0, 200.0, 300.0), 0)] * 2
    assert parser.stats.rejected == {"partial": 1}
    assert (parser.stats.samples_lost, parser.stats.counter_jumps, parser.stats.counter_resets) == (0, 0, 0)
    assert parser.stats.lines_ok == 4


# --- rejected lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # garbage and non-ASCII
        (b"\x00\xff#!garbage", "not_ascii"),
        (b"\xff\xfe\xfd", "not_ascii"),
        (b"caf\xc3\xa9,1,2", "not_ascii"),
        (b"1,2,3\xb0", "not_ascii"),
        (b"#!garbage", "field_count"),
        (b"\x00\x01\x02", "field_count"),  # ASCII control bytes
        # wrong field count
        (b"1", "field_count"),
        (b"1,2", "field_count"),
        (b"1,2,3,4,5", "field_count"),
        (b"1,2,3,4,5,6,7,8", "field_count"),
        (b",,,,,", "field_count"),
        # not numbers
        (b"a,2,3", "not_a_number"),
        (b"1,,3", "not_a_number"),
        (b"1,2,3x", "not_a_number"),
        (b"0x10,2,3", "not_a_number"),
        (b"5,1,two,3", "not_a_number"),
        # bad counters
        (b"x,1,2,3", "bad_counter"),
        (b",1,2,3", "bad_counter"),
        (b"1.5,1,2,3", "bad_counter"),
        (b"-1,1,2,3", "bad_counter"),
        (b"+1,1,2,3", "bad_counter"),
        (b"4294967296,1,2,3", "bad_counter"),  # does not fit a uint32
        # NaN and infinities never reach the model
        (b"nan,2,3", "out_of_range"),
        (b"1,NaN,3", "out_of_range"),
        (b"1,2,inf", "out_of_range"),
        (b"-inf,2,3", "out_of_range"),
        (b"1,Infinity,3", "out_of_range"),
        (b"9,1,2,nan", "out_of_range"),
        # outside value_min..value_max
        (b"1024,2,3", "out_of_range"),
        (b"1,2,1023.5", "out_of_range"),
        (b"-1,2,3", "out_of_range"),
        (b"9,1,2,-0.5", "out_of_range"),
        (b"1e9,2,3", "out_of_range"),
        # too long
        (b"1," * 200 + b"1", "too_long"),
        (b" " * MAX_LINE_BYTES + b"1,2,3", "too_long"),
        (b"\xff" * 1000, "too_long"),
        # empty
        (b"", "empty"),
        (b"   ", "empty"),
        (b"\r", "empty"),
        (b"\t \r", "empty"),
    ],
)
def test_rejected_line_is_counted_by_reason_and_skipped(line: bytes, reason: str) -> None:
    parser = synced()
    assert parser.feed(line + b"\n") == []
    assert parser.stats.rejected == {reason: 1}
    assert parser.stats.lines_ok == 0
    stats = parser.stats.as_dict()
    assert stats["lines_rejected"] == 1 and stats[f"rejected_{reason}"] == 1
    # The stream carries on with the next line.
    assert rows(parser.feed(b"1,2,3\n")) == [((1.0, 2.0, 3.0), 0)]


def test_line_of_exactly_max_bytes_is_accepted() -> None:
    line = b"1,2,3".rjust(MAX_LINE_BYTES, b" ")
    assert len(line) == MAX_LINE_BYTES
    parser = synced()
    assert rows(parser.feed(line + b"\n")) == [((1.0, 2.0, 3.0), 0)]


def test_reasons_add_up_in_as_dict() -> None:
    parser = synced()
    parser.feed(b"1,2\n\n\xff\n1,2\n2000,1,1\n1,2,3\n")
    assert parser.stats.as_dict() == {
        "lines_ok": 1,
        "samples_lost": 0,
        "counter_jumps": 0,
        "counter_resets": 0,
        "lines_rejected": 5,
        "rejected_empty": 1,
        "rejected_field_count": 2,
        "rejected_not_ascii": 1,
        "rejected_out_of_range": 1,
    }


def test_endless_line_without_newline_is_counted_once_and_bounded() -> None:
    parser = synced()
    for _ in range(100):
        assert parser.feed(b"\xff" * 100) == []
        assert len(parser._pending) <= MAX_LINE_BYTES  # memory stays bounded
    assert parser.stats.rejected == {"too_long": 1}
    # Its tail, up to the newline, is part of the same bad line: never parsed as a sample.
    assert rows(parser.feed(b",1,2,3\n4,5,6\n")) == [((4.0, 5.0, 6.0), 0)]
    assert parser.stats.rejected == {"too_long": 1}


def test_tail_of_an_overflowing_line_is_not_a_sample() -> None:
    # Line noise padding a valid-looking line: the whole line is too long, whichever way it arrives.
    parser = synced()
    assert parser.feed(b" " * (MAX_LINE_BYTES + 1)) == []
    assert parser.feed(b"1,2,3\n") == []
    assert parser.stats.rejected == {"too_long": 1}
    assert parser.stats.lines_ok == 0


# --- the sample counter --------------------------------------------------------------------


def test_consecutive_counters_have_no_gap() -> None:
    parser = synced()
    assert [p.gap_before for p in parser.feed(counter_lines(0, 1, 2, 3))] == [0, 0, 0, 0]
    assert (parser.stats.samples_lost, parser.stats.counter_jumps, parser.stats.counter_resets) == (0, 0, 0)


def test_counter_jump_counts_the_missing_samples() -> None:
    parser = synced()
    out = parser.feed(counter_lines(10, 11, 19, 20))
    assert [p.gap_before for p in out] == [0, 0, 7, 0]
    assert parser.stats.samples_lost == 7
    assert parser.stats.counter_jumps == 1
    assert parser.stats.counter_resets == 0
    assert parser.stats.lines_ok == 4


def test_jumps_accumulate() -> None:
    parser = synced()
    out = parser.feed(counter_lines(1, 3, 4, 10))
    assert [p.gap_before for p in out] == [0, 1, 0, 5]
    assert (parser.stats.samples_lost, parser.stats.counter_jumps) == (6, 2)


def test_a_rejected_line_shows_up_as_a_lost_sample() -> None:
    parser = synced()
    out = parser.feed(b"1,100,200,300\n2,100,oops,300\n3,100,200,300\n")
    assert [p.gap_before for p in out] == [0, 1]
    assert parser.stats.rejected == {"not_a_number": 1}
    assert (parser.stats.samples_lost, parser.stats.counter_jumps) == (1, 1)


def test_counter_wraps_at_2_pow_32_without_a_gap() -> None:
    parser = synced()
    out = parser.feed(counter_lines(WRAP - 3, WRAP - 2, WRAP - 1, 0, 1, 2))
    assert [p.gap_before for p in out] == [0] * 6
    assert (parser.stats.samples_lost, parser.stats.counter_jumps, parser.stats.counter_resets) == (0, 0, 0)


def test_jump_across_the_wrap_counts_only_the_missing_samples() -> None:
    parser = synced()
    out = parser.feed(counter_lines(WRAP - 2, 3))  # WRAP-1, 0, 1, 2 missing
    assert [p.gap_before for p in out] == [0, 4]
    assert (parser.stats.samples_lost, parser.stats.counter_jumps, parser.stats.counter_resets) == (4, 1, 0)


@pytest.mark.parametrize(
    "counters",
    [
        (5000, 5001, 0),  # the board rebooted
        (5000, 4000),  # backwards
        (7, 7),  # repeated
        (10, 10 + WRAP // 2 + 1),  # "forwards" by more than half the range is backwards
    ],
)
def test_counter_reset_or_backwards_is_a_reset_with_a_gap(counters: tuple[int, ...]) -> None:
    parser = synced()
    out = parser.feed(counter_lines(*counters))
    assert len(out) == len(counters)  # the samples themselves are fine
    assert out[-1].gap_before > 0  # ... but no window may join the two runs
    assert parser.stats.counter_resets == 1
    assert parser.stats.samples_lost == 0 and parser.stats.counter_jumps == 0


def test_counting_continues_normally_after_a_reset() -> None:
    parser = synced()
    out = parser.feed(counter_lines(5000, 0, 1, 2, 5))
    assert [p.gap_before for p in out] == [0, 1, 0, 0, 2]
    assert (parser.stats.counter_resets, parser.stats.counter_jumps, parser.stats.samples_lost) == (1, 1, 2)


def test_lines_without_counter_never_have_a_gap() -> None:
    parser = synced()
    assert [p.gap_before for p in parser.feed(b"1,2,3\n4,5,6\n7,8,9\n")] == [0, 0, 0]
    assert parser.stats.samples_lost == 0


# --- chunking does not matter ----------------------------------------------------------------

MIXED_STREAM = b"".join(
    [
        b"00,512\n",  # cut first line
        counter_lines(WRAP - 2, WRAP - 1, 0),
        b"\x00\xff#!garbage\n",
        b"1,100,2",  # a partial line, then a full one glued to it
        counter_lines(2),
        b"3,100,200,300,400\n",
        b"4,100,x,300\n",
        b"5,100,200,5000\n",
        b"6,nan,200,300\n",
        b"\n\r\n",
        b" " * 300 + b"1,2,3\n",  # over-long, with a valid-looking tail
        b"\xff" * 700 + b"\n",
        counter_lines(7, 15, 16),
        b"100,200,300\r\n",
        counter_lines(3, 4),  # reset
        b"x" * (MAX_LINE_BYTES + 1) + b"\n",
        b"1" * MAX_LINE_BYTES + b"\n",  # exactly the limit: a field_count reject, not too_long
        counter_lines(5),
        b"6,1,2",  # pending at the end
    ]
)


def feed_in(chunks: list[bytes]) -> tuple[list[tuple[tuple[float, ...], int]], dict[str, int]]:
    parser = LineParser(3, 0, 1023)
    out: list[ParsedLine] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return rows(out), parser.stats.as_dict()


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(data):
        n = rng.choice([1, 1, 2, 3, 7, 20, 64, 255, 256, 257, 600])
        chunks.append(data[i : i + n])
        i += n
    return chunks


def test_mixed_stream_fed_at_once() -> None:
    out, stats = feed_in([MIXED_STREAM])
    assert out == [
        ((100.0, 200.0, 300.0), 0),  # WRAP-2
        ((100.0, 200.0, 300.0), 0),  # WRAP-1
        ((100.0, 200.0, 300.0), 0),  # 0
        ((100.0, 200.0, 300.0), 6),  # 7: 1..6 never arrived intact
        ((100.0, 200.0, 300.0), 7),  # 15
        ((100.0, 200.0, 300.0), 0),  # 16
        ((100.0, 200.0, 300.0), 0),  # no counter
        ((100.0, 200.0, 300.0), 1),  # 3: reset
        ((100.0, 200.0, 300.0), 0),  # 4
        ((100.0, 200.0, 300.0), 0),  # 5
    ]
    assert stats == {
        "lines_ok": 10,
        "samples_lost": 13,
        "counter_jumps": 2,
        "counter_resets": 1,
        "lines_rejected": 13,
        "rejected_empty": 2,
        "rejected_field_count": 3,
        "rejected_not_a_number": 1,
        "rejected_not_ascii": 1,
        "rejected_out_of_range": 2,
        "rejected_partial": 1,
        "rejected_too_long": 3,
    }


def test_byte_by_byte_feeding_gives_the_same_result() -> None:
    whole = feed_in([MIXED_STREAM])
    assert feed_in([MIXED_STREAM[i : i + 1] for i in range(len(MIXED_STREAM))]) == whole


@pytest.mark.parametrize("seed", range(20))
def test_random_chunking_gives_the_same_result(seed: int) -> None:
    assert feed_in(split_randomly(MIXED_STREAM, seed)) == feed_in([MIXED_STREAM])


@pytest.mark.parametrize("seed", range(30))
def test_random_noise_never_raises_and_does_not_depend_on_chunking(seed: int) -> None:
    rng = random.Random(1000 + seed)
    alphabet = b"0123456789,,,,.\n\n\r -+eEnaifx\x00\xff"
    parts = []
    for _ in range(rng.randrange(1, 40)):
        if rng.random() < 0.5:
            parts.append(b"%d,%d,%d,%d\n" % tuple(rng.randrange(0, 1100) for _ in range(4)))
        else:
            parts.append(bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 400))))
    data = b"".join(parts)
    whole = feed_in([data])
    assert feed_in(split_randomly(data, seed)) == whole
    assert feed_in([data[i : i + 1] for i in range(len(data))]) == whole
    out, stats = whole
    assert stats["lines_ok"] == len(out)
    for values, gap in out:
        assert len(values) == 3 and all(0 <= v <= 1023 for v in values) and gap >= 0


# --- numbers are parsed strictly ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # Python's int()/float() take these; the protocol does not.
        (b"1_0,2,3", "not_a_number"),
        (b"1,2_0,3", "not_a_number"),
        (b"5,1_000,2,3", "not_a_number"),
        (b"1_0,1,2,3", "bad_counter"),
        (b"+1,2,3", "not_a_number"),
        (b"1,+2,3", "not_a_number"),
        (b"+nan,2,3", "not_a_number"),
        (b"1,\x0b2,3", "not_a_number"),  # only spaces and tabs around a field
        (b"1,2\r,3", "not_a_number"),  # \r only at the end of the line
        # ... nor these (rejected before too)
        (b"1,\x1f2,3", "not_a_number"),
        (b"1 0,2,3", "not_a_number"),
        (b"1,2,3 4", "not_a_number"),
        (b"1,0x1F,3", "not_a_number"),
        (b"1,1e_2,3", "not_a_number"),
        (b"1,--2,3", "not_a_number"),
        (b"1,2,-", "not_a_number"),
        (b"1,.,3", "not_a_number"),
        (b"1,e2,3", "not_a_number"),
    ],
)
@pytest.mark.parametrize("vectorised", [True, False])
def test_numbers_are_parsed_strictly(line: bytes, reason: str, vectorised: bool) -> None:
    parser = LineParser(3, 0, 1023) if vectorised else LineParser(3, 0, 1023, vectorised=False)
    parser.feed(b"\n")
    assert parser.feed(line + b"\n" + line + b"\r\n") == []
    assert parser.stats.rejected == {reason: 2}
    assert parser.stats.lines_ok == 0


@pytest.mark.parametrize(
    ("line", "values"),
    [
        (b"1.,.5,3", (1.0, 0.5, 3.0)),
        (b"1E2,-0,3", (100.0, 0.0, 3.0)),
        (b"1e+2,1e-2,0.0", (100.0, 0.01, 0.0)),
        (b"\t1\t,  2,3 ", (1.0, 2.0, 3.0)),
        (b"007,0010,2,3", (10.0, 2.0, 3.0)),  # leading zeros are decimal, never octal
    ],
)
def test_what_strict_parsing_still_accepts(line: bytes, values: tuple[float, ...]) -> None:
    parser = synced()
    assert rows(parser.feed(line + b"\n")) == [(values, 0)]


# --- the vectorised path and the line-by-line path agree ----------------------------------------


def test_a_batch_in_the_boards_shape_is_parsed_in_one_go_with_exact_counts() -> None:
    data = (
        counter_lines(1, 2)
        + b"3,100,2000,300\n"  # out of range
        + b"4294967296,1,2,3\n"  # counter beyond uint32
        + counter_lines(5)
        + b"6,-1,2,3\r\n"  # out of range, with a CR
        + b"7,0,1023,-0\r\n"
        + counter_lines(7)  # repeated: a reset
    )
    results = []
    for vectorised in (True, False):
        parser = LineParser(3, 0, 1023, vectorised=vectorised)
        parser.feed(b"\n")
        out = parser.feed(data)
        results.append(([(p.values, p.gap_before, p.counter) for p in out], parser.stats.as_dict()))
        assert (parser.fast_lines, parser.slow_lines) == ((8, 0) if vectorised else (0, 8))
    assert results[0] == results[1]
    assert results[0][0] == [
        ((100.0, 200.0, 300.0), 0, 1),
        ((100.0, 200.0, 300.0), 0, 2),
        ((100.0, 200.0, 300.0), 2, 5),
        ((0.0, 1023.0, 0.0), 1, 7),
        ((100.0, 200.0, 300.0), 1, 7),
    ]
    assert results[0][1] == {
        "lines_ok": 5,
        "samples_lost": 3,
        "counter_jumps": 2,
        "counter_resets": 1,
        "lines_rejected": 3,
        "rejected_bad_counter": 1,
        "rejected_out_of_range": 2,
    }


def board_like_stream(rng: random.Random, n_lines: int) -> bytes:
    """Mostly the reference sketch's lines, with every kind of fault now and then."""
    parts = []
    counter = rng.randrange(WRAP)
    for _ in range(n_lines):
        counter = (counter + 1) % WRAP
        values = [rng.randrange(0, 1024) for _ in range(3)]
        line = b"%d,%d,%d,%d\n" % (counter, *values)
        r = rng.random()
        if r < 0.03:
            counter = (counter + rng.randrange(2, 50)) % WRAP  # lost samples
        elif r < 0.04:
            counter = rng.randrange(100)  # the board restarted
        elif r < 0.05:
            line = b"%d,%d,%d,%d\n" % (counter + WRAP, *values)  # bad counter, same shape
        elif r < 0.07:
            line = b"%d,%d,%d,%d\n" % (counter, values[0], 1024 + values[1], values[2])  # out of range
        elif r < 0.08:
            line = b"%d,-%d,%d,%d\r\n" % (counter, *values)
        elif r < 0.09:
            line = b"%d,%d,%d\n" % tuple(values)  # no counter
        elif r < 0.10:
            line = rng.choice(
                [b"\n", b"\xff\x00garbage\n", b"1,2\n", b"1_0,2,3\n", b"1,2.5,3\n", b" 1,2,3\n"]
            )
        elif r < 0.11:
            line = line[: rng.randrange(len(line))]  # cut: glues onto the next line
        parts.append(line)
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(25))
def test_vectorised_parsing_matches_line_by_line_parsing(seed: int) -> None:
    rng = random.Random(seed)
    data = board_like_stream(rng, 3000)
    chunks = []
    i = 0
    while i < len(data):  # reads of about 20 ms at 1-4 kHz, sometimes tiny
        n = rng.choice([1, 7, 60, 250, 400, 800, 1600])
        chunks.append(data[i : i + n])
        i += n
    results = []
    for vectorised in (True, False):
        parser = LineParser(3, 0, 1023, vectorised=vectorised)
        out = [(p.values, p.gap_before, p.counter) for c in chunks for p in parser.feed(c)]
        results.append((out, parser.stats.as_dict()))
        if vectorised:
            assert parser.fast_lines > 0
    assert results[0] == results[1]
    assert results[0][1]["lines_ok"] > 2000
