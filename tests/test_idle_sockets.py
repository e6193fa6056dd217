"""What an open, idle socket keeps: not its handshake, and no asyncio queue or event."""

import asyncio
from collections.abc import Callable

from chat.wsprotocol import BoundedWebSocketProtocol, Flag, Inbox
from tests.conftest import Server, of_type, recv, recv_until
from tests.ws_helpers import send, welcome


def protocols_on(srv: Server, path: str) -> list[BoundedWebSocketProtocol]:
    assert srv.server is not None
    connections = tuple(srv.server.server_state.connections)
    return [
        c
        for c in connections
        if isinstance(c, BoundedWebSocketProtocol) and getattr(c, "scope", {}).get("path") == path
    ]


def test_open_sockets_keep_no_handshake_headers(make_server: Callable[..., Server]) -> None:
    """Once admitted, a room socket and a `/ws/me` socket hold none of their handshake's
    headers (not in the scope, not in the request that websockets' parser keeps) and no
    request or response, and still work both ways; an admin view, which checks its token
    again on every refresh, keeps them (the control: the check sees headers where they are)."""
    srv = make_server()
    user, admin = srv.register(), srv.admin
    assert admin is not None
    room = srv.create_room(user)
    token = user.token.encode()
    room_path = f"/ws/rooms/{room}"
    with (
        srv.ws(room_path, user) as room_ws,
        srv.ws("/ws/me", user) as me_ws,
        srv.ws("/ws/admin", admin) as admin_ws,
    ):
        welcome(room_ws)
        assert recv(me_ws)["type"] == "ready"
        recv_until(admin_ws, of_type("stats"))
        [room_protocol] = protocols_on(srv, room_path)
        [me_protocol] = protocols_on(srv, "/ws/me")
        [admin_protocol] = protocols_on(srv, "/ws/admin")
        for protocol in (room_protocol, me_protocol):
            assert protocol.scope["headers"] == []
            assert protocol.request is None and protocol.response is None
            assert isinstance(protocol.queue, Inbox) and isinstance(protocol.writable, Flag)
            parsed = protocol.conn.parser.gi_frame.f_locals["request"]
            assert len(parsed.headers) == 0
        admin_headers = dict(admin_protocol.scope["headers"])
        assert admin_headers[b"authorization"] == b"Bearer " + admin.token.encode()
        assert all(token not in value for _, value in room_protocol.scope["headers"])

        # Both still read and write: a message is stored and comes back, a frame on
        # /ws/me is answered with its error.
        send(room_ws, {"type": "message", "body": "still here", "nonce": "n1"})
        assert recv_until(room_ws, of_type("message"))["body"] == "still here"
        send(me_ws, {"type": "typing"})
        assert recv_until(me_ws, of_type("error"))["code"] == "invalid_message"


def test_inbox_and_flag_behave_as_the_queue_and_event_they_replace() -> None:
    async def scenario() -> None:
        inbox: Inbox[int] = Inbox()
        assert inbox.empty()
        getter = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        assert not getter.done()
        inbox.put_nowait(1)
        inbox.put_nowait(2)
        assert await getter == 1
        assert inbox.qsize() == 1 and await inbox.get() == 2

        # A getter cancelled after being woken leaves its item to the next.
        first, second = (asyncio.create_task(inbox.get()) for _ in range(2))
        await asyncio.sleep(0)
        inbox.put_nowait(3)
        first.cancel()
        assert await second == 3
        assert inbox.empty() and inbox._waiters is None

        flag = Flag()
        assert flag.is_set()
        await asyncio.wait_for(flag.wait(), 1)
        flag.clear()
        waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        flag.set()
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        assert flag._waiters is None

    asyncio.run(scenario())
