"""The room sequencer: a room's messages passed on in order, once each, without gaps."""

from hypothesis import given
from hypothesis import strategies as st

from chat.sequencer import MAX_EMPTY_FILLS, RoomSequencer


def started(last: int = 0) -> RoomSequencer[str]:
    sequencer = RoomSequencer[str]()
    assert sequencer.start(last) == []
    return sequencer


def rows(*seqs: int) -> list[tuple[int, str]]:
    """Messages as the database returns them; item `mN` is message N."""
    return [(seq, f"m{seq}") for seq in seqs]


def fail_fills(sequencer: RoomSequencer[str], times: int) -> None:
    for _ in range(times):
        assert sequencer.begin_fill() is not None
        assert sequencer.fill([]) == []
        assert not sequencer.skipped


def test_messages_in_order_pass_straight_on() -> None:
    """Each next message is passed on as it arrives, and no read is needed."""
    sequencer = started()
    assert sequencer.offer(1, "m1") == ["m1"]
    assert sequencer.offer(2, "m2") == ["m2"]
    assert sequencer.last == 2
    assert not sequencer.needs_fill
    assert sequencer.begin_fill() is None


def test_an_early_message_is_held_until_the_gap_is_filled() -> None:
    """A message after a gap waits for the missing ones, read from after the last passed on."""
    sequencer = started()
    assert sequencer.offer(1, "m1") == ["m1"]
    assert sequencer.offer(3, "m3") == []
    assert sequencer.offer(4, "m4") == []
    assert sequencer.needs_fill
    assert sequencer.begin_fill() == 1
    assert sequencer.fill(rows(2)) == ["m2", "m3", "m4"]
    assert sequencer.last == 4
    assert not sequencer.needs_fill


def test_a_late_arrival_releases_what_was_held() -> None:
    """The missing message may still come over the wire; it and those held after it go on."""
    sequencer = started()
    assert sequencer.offer(3, "m3") == []
    assert sequencer.offer(2, "m2") == []
    assert sequencer.offer(1, "m1") == ["m1", "m2", "m3"]
    assert not sequencer.needs_fill


def test_a_duplicate_from_the_wire_is_dropped() -> None:
    """A message passed on already, or held already, is passed on only once."""
    sequencer = started()
    assert sequencer.offer(1, "m1") == ["m1"]
    assert sequencer.offer(1, "m1") == []
    assert sequencer.offer(3, "m3") == []
    assert sequencer.offer(3, "m3") == []
    assert sequencer.offer(2, "m2") == ["m2", "m3"]
    assert sequencer.offer(2, "m2") == []


def test_messages_read_during_a_fill_are_not_passed_on_twice() -> None:
    """What arrives over the wire while a read is under way is dropped from its result,
    and what a read passed on is dropped when it arrives over the wire later."""
    sequencer = started()
    assert sequencer.offer(3, "m3") == []
    assert sequencer.begin_fill() == 0
    assert sequencer.offer(1, "m1") == ["m1"]
    assert sequencer.fill(rows(1, 2, 3, 4)) == ["m2", "m3", "m4"]
    assert sequencer.offer(2, "m2") == []
    assert sequencer.offer(4, "m4") == []
    assert sequencer.offer(5, "m5") == ["m5"]


def test_a_fill_takes_only_rows_that_continue_from_the_last() -> None:
    """Rows after a gap of their own are not passed on: they stop the fill."""
    sequencer = started(1)
    assert sequencer.offer(10, "m10") == []
    sequencer.begin_fill()
    assert sequencer.fill(rows(3, 4)) == []
    assert sequencer.last == 1
    sequencer.begin_fill()
    assert sequencer.fill(rows(2, 3, 5, 6)) == ["m2", "m3"]
    assert sequencer.last == 3
    assert sequencer.needs_fill


def test_everything_is_held_before_start() -> None:
    """Before the first reader's history, messages wait; those in that history are dropped."""
    sequencer = RoomSequencer[str]()
    assert sequencer.offer(1, "m1") == []
    assert sequencer.offer(3, "m3") == []
    assert sequencer.offer(4, "m4") == []
    assert sequencer.offer(6, "m6") == []
    assert not sequencer.needs_fill
    assert sequencer.last is None
    assert sequencer.start(2) == ["m3", "m4"]
    assert sequencer.last == 4
    # m5 is missing: m6 waits for a read.
    assert sequencer.needs_fill
    assert sequencer.begin_fill() == 4


def test_start_counts_only_once() -> None:
    """Later readers' histories do not move the room's stream."""
    sequencer = started(5)
    assert sequencer.start(2) == []
    assert sequencer.start(9) == []
    assert sequencer.last == 5
    assert sequencer.offer(6, "m6") == ["m6"]


def test_fills_that_find_nothing_skip_ahead_after_the_limit() -> None:
    """Should the missing messages never be found, the room skips to the first held one
    after MAX_EMPTY_FILLS reads, and not one read before."""
    sequencer = started(1)
    assert sequencer.offer(5, "m5") == []
    assert sequencer.offer(6, "m6") == []
    assert sequencer.offer(8, "m8") == []
    fail_fills(sequencer, MAX_EMPTY_FILLS - 1)
    assert sequencer.last == 1
    assert sequencer.begin_fill() == 1
    assert sequencer.fill([]) == ["m5", "m6"]
    assert sequencer.skipped == range(2, 5)
    assert sequencer.last == 6
    # The next gap gets as many reads again.
    fail_fills(sequencer, MAX_EMPTY_FILLS - 1)
    sequencer.begin_fill()
    assert sequencer.fill([]) == ["m8"]
    assert sequencer.skipped == range(7, 8)
    assert not sequencer.needs_fill


def test_progress_resets_the_count_of_empty_fills() -> None:
    """The limit counts reads in a row that find nothing: progress by a read or by the wire
    starts it again."""
    sequencer = started()
    assert sequencer.offer(10, "m10") == []
    fail_fills(sequencer, MAX_EMPTY_FILLS - 1)
    sequencer.begin_fill()
    assert sequencer.fill(rows(1, 2)) == ["m1", "m2"]
    fail_fills(sequencer, MAX_EMPTY_FILLS - 1)
    assert sequencer.offer(3, "m3") == ["m3"]
    fail_fills(sequencer, MAX_EMPTY_FILLS - 1)
    sequencer.begin_fill()
    assert sequencer.fill([]) == ["m10"]
    assert sequencer.skipped == range(4, 10)


def test_a_fill_that_makes_progress_clears_what_it_skipped() -> None:
    """`skipped` tells about the latest fill only."""
    sequencer = started()
    assert sequencer.offer(3, "m3") == []
    fail_fills(sequencer, MAX_EMPTY_FILLS - 1)
    sequencer.begin_fill()
    assert sequencer.fill([]) == ["m3"]
    assert sequencer.skipped
    assert sequencer.offer(5, "m5") == []
    sequencer.begin_fill()
    assert sequencer.fill(rows(4)) == ["m4", "m5"]
    assert not sequencer.skipped


def test_catch_up_reads_until_a_read_finds_nothing_new() -> None:
    """After a reconnect the room is read up to date, page by page, though nothing is held."""
    sequencer = started(2)
    assert not sequencer.needs_fill
    sequencer.catch_up()
    assert sequencer.needs_fill
    assert sequencer.begin_fill() == 2
    assert sequencer.fill(rows(3, 4)) == ["m3", "m4"]
    # A read returns a page at most: there may be more.
    assert sequencer.begin_fill() == 4
    assert sequencer.fill([]) == []
    assert not sequencer.needs_fill
    assert not sequencer.skipped


def test_a_catch_up_asked_for_during_a_read_gets_a_read_of_its_own() -> None:
    """A read that began before events were lost may have missed them."""
    sequencer = started(2)
    sequencer.catch_up()
    assert sequencer.begin_fill() == 2
    sequencer.catch_up()
    assert sequencer.fill([]) == []
    assert sequencer.needs_fill
    assert sequencer.begin_fill() == 2
    assert sequencer.fill(rows(3)) == ["m3"]


def test_a_gap_fill_stops_once_nothing_is_held() -> None:
    """Without a catch-up, a fill that closed the gap needs no further read."""
    sequencer = started()
    assert sequencer.offer(2, "m2") == []
    sequencer.begin_fill()
    assert sequencer.fill(rows(1, 2)) == ["m1", "m2"]
    assert not sequencer.needs_fill


def test_catch_up_before_start_is_ignored() -> None:
    """The first reader's history is read from the database anyway."""
    sequencer = RoomSequencer[str]()
    sequencer.catch_up()
    assert not sequencer.needs_fill
    assert sequencer.start(0) == []
    assert not sequencer.needs_fill


PAGE = 3


@given(st.data())
def test_any_arrival_order_passes_each_message_on_once_in_order(data: st.DataObject) -> None:
    """Messages 1..N arriving in any order, some dropped or repeated, with reads of the
    database (a page at a time) interleaved, start after any point: what is passed on is
    exactly the messages after the start, in order."""
    n = data.draw(st.integers(1, 30), label="n")
    order = data.draw(st.permutations(range(1, n + 1)), label="order")
    arrivals = [seq for seq in order if data.draw(st.booleans(), label="kept")]
    for seq in data.draw(st.lists(st.sampled_from(order), max_size=n), label="repeated"):
        arrivals.insert(data.draw(st.integers(0, len(arrivals)), label="at"), seq)
    start_at = data.draw(st.integers(0, n), label="start")
    start_index = data.draw(st.integers(0, len(arrivals)), label="started after")
    sequencer = RoomSequencer[int]()
    passed: list[int] = []
    reading: int | None = None  # The seq the read under way began after.

    def read() -> None:
        nonlocal reading
        if reading is None:
            reading = sequencer.begin_fill()
        else:
            found = [(seq, seq) for seq in range(reading + 1, min(reading + PAGE, n) + 1)]
            passed.extend(sequencer.fill(found))
            assert not sequencer.skipped
            reading = None

    for index, seq in enumerate(arrivals):
        if index == start_index:
            passed.extend(sequencer.start(start_at))
        passed.extend(sequencer.offer(seq, seq))
        if data.draw(st.booleans(), label="read"):
            read()
    if sequencer.last is None:
        passed.extend(sequencer.start(start_at))
    # The broker reconnected: messages dropped at the end are read too.
    sequencer.catch_up()
    for _ in range(2 * n + 4):
        read()
        if reading is None and not sequencer.needs_fill:
            break
    assert passed == list(range(start_at + 1, n + 1))
    assert not sequencer.needs_fill
