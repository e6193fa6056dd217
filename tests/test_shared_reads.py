"""Room sockets that come back at once with the same `since` share their welcome's read,
and still each get every message exactly once while messages keep arriving."""

import asyncio
from typing import Any

import orjson
from websockets.asyncio.client import connect

from tests.conftest import Account, Server
from tests.ws_helpers import busy, seed

SOCKETS = 60
LIVE_MESSAGES = 3


async def _resume(server: Server, account: Account, room: str, since: int) -> list[int]:
    """A socket back with `since`: the ids of its welcome's history, then of the next live
    messages."""
    async with connect(
        f"{server.ws_url}/ws/rooms/{room}?since={since}",
        additional_headers=account.headers,
        open_timeout=30,
    ) as ws:
        ids: list[int] = []
        live = 0
        while live < LIVE_MESSAGES:
            frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame["type"] == "welcome":
                ids += [m["id"] for m in frame["history"]]
            elif frame["type"] == "message":
                ids.append(frame["id"])
                live += 1
        return ids


async def _storm(server: Server, account: Account, room: str, since: int) -> list[list[int]]:
    return list(
        await asyncio.gather(*(_resume(server, account, room, since) for _ in range(SOCKETS)))
    )


def test_a_storm_of_resumes_shares_reads_and_misses_nothing(make_server: Any) -> None:
    server: Server = make_server(
        rate_burst=10**6,
        rate_per_sec=10**6,
        max_connections_per_user=SOCKETS,
        ws_handshakes_burst=SOCKETS,
    )
    reader, poster = server.register(), server.register()
    room = server.create_room(reader)
    since = seed(server, poster, room, 5)[-1]["id"]
    reads = server.server.config.app.state.services.welcome_reads  # type: ignore[union-attr]
    reads_before, asked_before = reads.reads, reads.asked
    with busy(server, poster, room, threads=2) as posted:
        seen = asyncio.run(_storm(server, reader, room, since))
    for ids in seen:
        # Everything after `since`, from the first posted on, in order and once.
        assert ids == [i for i in posted if i <= ids[-1]], "missed or repeated"
    assert reads.asked - asked_before == SOCKETS
    # Positive control of the sharing: fewer reads than sockets.
    assert reads.reads - reads_before < SOCKETS


async def _welcome_user(server: Server, account: Account, room: str) -> str:
    """Who a new socket of `account` is welcomed as."""
    async with connect(
        f"{server.ws_url}/ws/rooms/{room}", additional_headers=account.headers, open_timeout=30
    ) as ws:
        while True:
            frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame["type"] == "welcome":
                return str(frame["user"])


async def _two_storms(server: Server, amy: Account, bob: Account, room: str) -> list[str]:
    each = [amy, bob] * (SOCKETS // 2)
    return list(await asyncio.gather(*(_welcome_user(server, a, room) for a in each)))


def test_sockets_of_one_sign_in_share_its_reads_and_no_one_elses(make_server: Any) -> None:
    """Sockets that come at once read their account, session and standing in the room
    together when they are of one sign-in: fewer reads than sockets (the sharing's positive
    control), and every socket welcomed as its own user although two users' sockets come
    interleaved."""
    server: Server = make_server(max_connections_per_user=SOCKETS, ws_handshakes_burst=SOCKETS)
    amy, bob = server.register(), server.register()
    room = server.create_room(amy)
    services = server.server.config.app.state.services  # type: ignore[union-attr]
    sign_ins, standings = services.sign_in_reads, services.conversations.standing_reads
    before = sign_ins.reads, sign_ins.asked, standings.reads, standings.asked
    welcomed = asyncio.run(_two_storms(server, amy, bob, room))
    assert welcomed == [amy.username, bob.username] * (SOCKETS // 2)
    assert sign_ins.asked - before[1] == SOCKETS
    assert standings.asked - before[3] == SOCKETS
    assert sign_ins.reads - before[0] < SOCKETS
    assert standings.reads - before[2] < SOCKETS
