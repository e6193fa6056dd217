"""The hub's delivery of room events: rooms kept apart, messages in order, gaps read
from the database. Stand-in sockets and database, no server."""

import asyncio
import logging
from datetime import UTC, datetime
from typing import cast

import pytest

from chat import events, hub
from chat.events import RoomEvent
from chat.hub import Connection, Frame, Hub
from chat.messages import StoredMessage

PAGE = 3


class Socket:
    """Records what the hub sends it, and in how many writes."""

    def __init__(self, room: str, user: str) -> None:
        self.room, self.user, self.token_id = room, user, "token"
        self.frames: list[Frame] = []
        self.writes = 0
        self._grew = asyncio.Event()

    def push(self, frame: Frame, wire: bytes | None = None) -> None:
        self.push_run([frame], b"")

    def push_run(self, frames: list[Frame], wire: bytes) -> None:
        self.frames += frames
        self.writes += 1
        self._grew.set()

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.frames]

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.frames) < count:
                self._grew.clear()
                await self._grew.wait()


class Database:
    """A room's stored messages, read a page at a time; some reads can be made to fail."""

    def __init__(self, room: str, seqs: list[int]) -> None:
        at = datetime(2024, 1, 1, tzinfo=UTC)
        self.messages = [StoredMessage(seq, room, "ann", f"m{seq}", at, None) for seq in seqs]
        self.failures = 0

    async def fetch(self, room: str, after: int) -> list[StoredMessage]:
        if self.failures:
            self.failures -= 1
            raise OSError("database away")
        return [m for m in self.messages if m.id > after][:PAGE]


def message(room: str, seq: int) -> RoomEvent:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    stored = StoredMessage(seq, room, "ann", f"m{seq}", at, None)
    return events.message_event(stored)


def joined(the_hub: Hub, room: str, user: str = "ann", last: int = 0) -> Socket:
    socket = Socket(room, user)
    the_hub.add(cast(Connection, socket))
    the_hub.start_feed(room, last)
    return socket


def test_events_reach_only_their_room_and_skip_their_user() -> None:
    """Events of several rooms in one delivery go each to its room's sockets, in order;
    a typing hint goes to everyone but its typist."""

    async def test() -> None:
        the_hub = Hub(Database("x", []).fetch)
        ann = joined(the_hub, "a", "ann")
        bob, carol = joined(the_hub, "b", "bob"), joined(the_hub, "b", "carol")
        typing = RoomEvent("b", "typing", b"bob types", skip_user="bob")
        presence = RoomEvent("a", "presence", b"carol joins")
        the_hub.deliver([message("a", 1), message("b", 1), typing, presence, message("b", 2)])
        assert ann.frames == [(1, message("a", 1).payload), (0, b"carol joins")]
        assert bob.seqs == [1, 2]
        assert carol.frames[1] == (0, b"bob types")
        assert carol.seqs == [1, 0, 2]

    asyncio.run(test())


def test_a_run_of_messages_is_one_write() -> None:
    """Consecutive messages of one delivery reach each socket in one write."""

    async def test() -> None:
        the_hub = Hub(Database("a", []).fetch)
        ann = joined(the_hub, "a")
        the_hub.deliver([message("a", 1), message("a", 2), message("a", 3)])
        assert (ann.seqs, ann.writes) == ([1, 2, 3], 1)

    asyncio.run(test())


def test_a_gap_is_read_from_the_database() -> None:
    """A message after a gap waits for the missing ones, read from the database; what was
    passed on already is not sent twice."""

    async def test() -> None:
        database = Database("a", [1, 2, 3, 4, 5])
        the_hub = Hub(database.fetch)
        ann = joined(the_hub, "a")
        the_hub.deliver([message("a", 1), message("a", 4)])
        assert ann.seqs == [1]
        await ann.until(4)
        assert ann.frames == [(seq, message("a", seq).payload) for seq in (1, 2, 3, 4)]
        the_hub.deliver([message("a", 3), message("a", 5)])
        assert ann.seqs == [1, 2, 3, 4, 5]

    asyncio.run(test())


def test_catch_up_reads_a_room_up_to_date() -> None:
    """After a broker reconnect a room is read page by page up to its newest message."""

    async def test() -> None:
        the_hub = Hub(Database("a", list(range(1, 8))).fetch)
        ann = joined(the_hub, "a")
        the_hub.catch_up()
        await ann.until(7)
        assert ann.seqs == list(range(1, 8))

    asyncio.run(test())


def test_a_failed_read_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database that is briefly away delays a catch-up but loses nothing."""
    monkeypatch.setattr(hub, "FILL_ERROR_RETRY_SECS", 0)

    async def test() -> None:
        database = Database("a", [1, 2, 3])
        database.failures = 2
        the_hub = Hub(database.fetch)
        ann = joined(the_hub, "a")
        the_hub.catch_up()
        await ann.until(3)
        assert ann.seqs == [1, 2, 3]
        assert database.failures == 0

    asyncio.run(test())


def test_a_gap_never_found_is_skipped_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages the database does not have do not stall the room for good."""
    monkeypatch.setattr(hub, "FILL_RETRY_SECS", 0)

    async def test() -> None:
        the_hub = Hub(Database("a", [1, 4]).fetch)
        ann = joined(the_hub, "a")
        the_hub.deliver([message("a", 4)])
        await ann.until(2)
        assert ann.seqs == [1, 4]

    with caplog.at_level(logging.ERROR, logger="chat.hub"):
        asyncio.run(test())
    assert "messages 2 to 3 of a not found" in caplog.messages
