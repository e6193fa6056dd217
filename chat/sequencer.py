"""A room's messages, put back in order: what to pass on, hold, drop or read.

Messages reach a process in `seq` order from itself but not from others, and
pub/sub may drop some. A room's seqs are 1, 2, 3... committed in that order, so
a message that arrives early proves its predecessors are in the database: it is
held while they are read from there. Passing messages on strictly in order,
without gaps, lets a client that has seen N resume with `since=N`.

The sequencer only decides; reading the database, and when, is the caller's.
"""

from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

# Fills in a row that find nothing while messages are held; then the room skips
# ahead to them rather than stall.
MAX_EMPTY_FILLS = 20


class RoomSequencer(Generic[T]):
    """Passes on a room's items in seq order, once each, without gaps.

    `start`, `offer` and `fill` return the items that may now be passed on, oldest
    first. While `needs_fill`, the caller reads the messages after `begin_fill()`
    from the database and hands them to `fill`, until `begin_fill()` returns None.
    """

    __slots__ = ("_behind", "_empty_fills", "_held", "_reading_to_latest", "last", "skipped")

    def __init__(self) -> None:
        # The newest seq passed on; None until `start`.
        self.last: int | None = None
        # The seqs the latest `fill` gave up on (empty unless it skipped ahead).
        self.skipped = range(0)
        self._held: dict[int, T] = {}
        self._empty_fills = 0
        # Events may have been lost: read the database up to date.
        self._behind = False
        # The read under way was asked to go up to date.
        self._reading_to_latest = False

    def start(self, last: int) -> list[T]:
        """Begin after `last`, the newest seq in the history a first reader was sent.

        Held items up to `last` are dropped; later calls change nothing.
        """
        if self.last is not None:
            return []
        self.last = last
        for seq in [seq for seq in self._held if seq <= last]:
            del self._held[seq]
        return self._release()

    def offer(self, seq: int, item: T) -> list[T]:
        """An item as it arrives: passed on if next in line, else held or, if old, dropped."""
        if self.last is None or seq > self.last + 1:
            self._held[seq] = item
            return []
        if seq <= self.last:
            return []
        self._advance(seq)
        return [item, *self._release()]

    def catch_up(self) -> None:
        """Events may have been lost (the broker reconnected): read up to date."""
        if self.last is not None:
            self._behind = True

    @property
    def needs_fill(self) -> bool:
        """Whether the database must be read: items are held, or a catch-up is due."""
        return self.last is not None and bool(self._held or self._behind)

    def begin_fill(self) -> int | None:
        """A database read is about to begin: the seq it reads after, or None if no read
        is needed. A catch-up asked for once it began needs a read of its own."""
        if not self.needs_fill:
            return None
        self._reading_to_latest, self._behind = self._behind, False
        return self.last

    def fill(self, found: Sequence[tuple[int, T]]) -> list[T]:
        """What the read from `begin_fill()` found, ascending: the part that continues
        from `last` and the held items that follow it.

        Should fills keep finding nothing while items are held, the room skips
        ahead to the first of them after MAX_EMPTY_FILLS and sets `skipped`.
        """
        assert self.last is not None, "fill before start"
        self.skipped = range(0)
        released: list[T] = []
        for seq, item in found:
            if seq <= self.last:
                continue  # Passed on already, as it arrived during the read.
            if seq != self.last + 1:
                break
            self._advance(seq)
            self._held.pop(seq, None)
            released.append(item)
        released += self._release()
        if released:
            # A read stops at a page's end: more may follow.
            self._behind = self._behind or self._reading_to_latest
        elif self._held:
            self._empty_fills += 1
            if self._empty_fills >= MAX_EMPTY_FILLS:
                # Should not happen: a held seq proves its predecessors were committed.
                first = min(self._held)
                self.skipped = range(self.last + 1, first)
                self.last = first - 1
                released = self._release()
        return released

    def _advance(self, seq: int) -> None:
        self.last = seq
        self._empty_fills = 0

    def _release(self) -> list[T]:
        """The held items next in line, now passed on."""
        assert self.last is not None
        released = []
        while self.last + 1 in self._held:
            self._advance(self.last + 1)
            released.append(self._held.pop(self.last))
        return released
