"""The message lifecycle on the room socket (SPEC "Message lifecycle"): `edit`, `delete` and
`react` frames, `update` events to everyone in the room, `forbidden` / `not_found` errors,
and resuming with `?since=` gets every change missed, exactly once."""

from typing import Any
from urllib.parse import quote

import pytest

from chat import messages
from tests.conftest import Account, Server, of_type, recv_until, run_sql
from tests.ws_helpers import Frame, frames_until, own_message, send, welcome

THUMBS = "\N{THUMBS UP SIGN}"


def rest(server: Server, account: Account, method: str, path: str, body: Any = None) -> Any:
    with server.client(headers=account.headers) as http:
        r = http.request(method, path, json=body)
    assert r.status_code in (200, 201, 204), r.text
    return r.json() if r.content else None


def say(server: Server, account: Account, room: str, body: str) -> Frame:
    message: Frame = rest(server, account, "POST", f"/api/rooms/{room}/messages", {"body": body})
    return message


def update_of(message_id: int, **fields: Any) -> Any:
    def match(frame: Frame) -> bool:
        if frame.get("type") != "update" or frame["message"]["id"] != message_id:
            return False
        return all(frame["message"].get(k) == v for k, v in fields.items())

    return match


def history(server: Server, account: Account, room: str) -> dict[int, Frame]:
    r = rest(server, account, "GET", f"/api/rooms/{room}/messages?limit=200")
    return {m["id"]: m for m in r["messages"]}


def test_changes_reach_everyone_in_the_room(server: Server) -> None:
    """An edit, a reaction and a delete sent over the socket reach every socket of the room
    (the sender's too) as `{"type":"update","message":{...}}` with the whole new state,
    which is what REST history then shows."""
    amy, bob = server.register(), server.register()
    room = server.create_room(amy)
    path = f"/ws/rooms/{room}"
    with server.ws(path, amy) as wa, server.ws(path, bob) as wb:
        welcome(wa), welcome(wb)
        send(wa, {"type": "message", "body": "helo", "nonce": "m1"})
        mid = recv_until(wa, own_message("m1"))["id"]
        recv_until(wb, of_type("message", id=mid))
        send(wa, {"type": "edit", "id": mid, "body": f"hello @{bob.username}"})
        for ws in (wa, wb):
            update = recv_until(ws, update_of(mid, body=f"hello @{bob.username}"))
            assert update["message"]["edited_at"] is not None
            assert update["message"]["mentions"] == [bob.username]
        send(wb, {"type": "react", "id": mid, "emoji": THUMBS, "on": True})
        for ws in (wa, wb):
            recv_until(ws, update_of(mid, reactions={THUMBS: [bob.username]}))
        send(wb, {"type": "react", "id": mid, "emoji": THUMBS, "on": False})
        for ws in (wa, wb):
            recv_until(ws, update_of(mid, reactions={}))
        send(wa, {"type": "delete", "id": mid})
        for ws in (wa, wb):
            gone = recv_until(ws, update_of(mid, deleted=True))["message"]
            assert gone["body"] == "" and gone["mentions"] == [] and gone["user"] == amy.username
        assert history(server, amy, room)[mid] == gone


def test_forbidden_and_not_found_errors(server: Server) -> None:
    """Editing someone else's message → `forbidden`; deleting it as a plain member →
    `forbidden`; an unknown id, or a deleted message, → `not_found`. The socket stays open,
    and nothing changes (the message is as before in history)."""
    amy, bob = server.register(), server.register()
    room = server.create_room(amy)
    theirs = say(server, amy, room, "amy's")
    gone = say(server, bob, room, "bob's, soon deleted")
    rest(server, bob, "DELETE", f"/api/rooms/{room}/messages/{gone['id']}")
    with server.ws(f"/ws/rooms/{room}", bob) as wb:
        welcome(wb)
        asks: list[tuple[Frame, str]] = [
            ({"type": "edit", "id": theirs["id"], "body": "mine now"}, "forbidden"),
            ({"type": "delete", "id": theirs["id"]}, "forbidden"),
            ({"type": "edit", "id": 10**12, "body": "x"}, "not_found"),
            ({"type": "delete", "id": 10**12}, "not_found"),
            ({"type": "react", "id": 10**12, "emoji": THUMBS, "on": True}, "not_found"),
            ({"type": "edit", "id": gone["id"], "body": "back"}, "not_found"),
            ({"type": "react", "id": gone["id"], "emoji": THUMBS, "on": True}, "not_found"),
        ]
        for frame, code in asks:
            send(wb, frame)
            error = recv_until(wb, of_type("error"))
            assert error["code"] == code, (frame, error)
        # Positive control: the same socket may change what is its to change.
        mine = say(server, bob, room, "bob's")
        send(wb, {"type": "edit", "id": mine["id"], "body": "edited"})
        recv_until(wb, update_of(mine["id"], body="edited"))
    assert history(server, amy, room)[theirs["id"]] == theirs


def test_changes_are_rate_limited(make_server: Any) -> None:
    """Change frames count against the user's message rate: past it, `rate_limited` with
    `retry_after`."""
    srv: Server = make_server(rate_burst=2, rate_per_sec=0.01)
    amy = srv.register()
    room = srv.create_room(amy)
    with srv.ws(f"/ws/rooms/{room}", amy) as ws:
        welcome(ws)
        send(ws, {"type": "message", "body": "one", "nonce": "n"})
        mid = recv_until(ws, own_message("n"))["id"]
        send(ws, {"type": "react", "id": mid, "emoji": ":a:", "on": True})
        recv_until(ws, update_of(mid, reactions={":a:": [amy.username]}))
        send(ws, {"type": "react", "id": mid, "emoji": ":b:", "on": True})
        error = recv_until(ws, of_type("error"))
        assert error["code"] == "rate_limited" and error["retry_after"] > 0


def test_resume_gets_every_missed_change_exactly_once(server: Server) -> None:
    """A socket reopened with `?since=ID` gets, besides the messages after ID in `history`,
    `updates`: the current state of each older message changed after ID, once each, even
    when it changed several times; no `update` frame repeats them afterwards (a change made
    after the welcome does arrive, once: the positive control)."""
    amy, bob = server.register(), server.register()
    room = server.create_room(amy)
    path = f"/ws/rooms/{room}"
    early = [say(server, amy, room, f"m{i}") for i in range(4)]
    with server.ws(path, bob) as wb:
        seen = welcome(wb)["history"]
    last = seen[-1]["id"]
    # While bob is away: two edits of one message, a reaction on another, a deletion, a
    # reaction added and taken back (its message changed, but back to as it was), and a
    # new message that is then edited itself.
    base = f"/api/rooms/{room}/messages"
    rest(server, amy, "PATCH", f"{base}/{early[0]['id']}", {"body": "once"})
    rest(server, amy, "PATCH", f"{base}/{early[0]['id']}", {"body": "twice"})
    rest(server, amy, "PUT", f"{base}/{early[1]['id']}/reactions/{quote(THUMBS)}")
    rest(server, amy, "DELETE", f"{base}/{early[2]['id']}")
    rest(server, amy, "PUT", f"{base}/{early[3]['id']}/reactions/:x:")
    rest(server, amy, "DELETE", f"{base}/{early[3]['id']}/reactions/:x:")
    newer = say(server, amy, room, "new")
    rest(server, amy, "PATCH", f"{base}/{newer['id']}", {"body": "new, edited"})
    now = history(server, amy, room)
    with server.ws(f"{path}?since={last}", bob) as wb:
        hello = welcome(wb)
        updates = hello["updates"]
        assert [u["id"] for u in updates] == [m["id"] for m in early]
        assert updates == [now[m["id"]] for m in early]
        assert hello["history"] == [now[newer["id"]]]
        # The positive control, and nothing about the missed changes before it.
        rest(server, amy, "PUT", f"{base}/{early[0]['id']}/reactions/:y:")
        before = frames_until(wb, update_of(early[0]["id"], reactions={":y:": [amy.username]}))
        assert not [f for f in before[:-1] if f["type"] in ("update", "message")], before
    # Nothing changed since the newest message: an empty list, present because the socket
    # resumed. (Changes are not numbered on the wire: a client knows the messages it saw,
    # so those made after its newest one come again, in their current state.)
    newest = say(server, amy, room, "newest")["id"]
    with server.ws(f"{path}?since={newest}", bob) as wb:
        hello = welcome(wb)
        assert hello["updates"] == [] and hello["history"] == []
    with server.ws(path, bob) as wb:
        assert "updates" not in welcome(wb)


def test_changes_while_the_welcome_is_read_are_not_lost(server: Server) -> None:
    """Sockets opening with `?since=` while another user keeps editing a message each end
    up with that message's final state: from the welcome's `updates` or from later `update`
    frames, never a stale one last."""
    amy, bob = server.register(), server.register()
    room = server.create_room(amy)
    target = say(server, amy, room, "v0")
    path = f"/ws/rooms/{room}"
    with server.ws(path, amy) as wa:
        welcome(wa)
        sockets = []
        for i in range(1, 9):
            send(wa, {"type": "edit", "id": target["id"], "body": f"v{i}"})
            sockets.append(server.ws(f"{path}?since={target['id']}", bob).__enter__())
        recv_until(wa, update_of(target["id"], body="v8"))
        try:
            for ws in sockets:
                hello = welcome(ws)
                state = {u["id"]: u["body"] for u in hello["updates"]}.get(target["id"], "v0")
                while state != "v8":
                    frame = recv_until(ws, update_of(target["id"]))
                    state = frame["message"]["body"]
        finally:
            for ws in sockets:
                ws.close()


def test_too_many_changes_to_resume_start_over(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When more older messages changed than a welcome sends as updates, the resume is
    `truncated` (the client starts over from the newest messages, in their current state)
    rather than leaving any change out; within the bound it is not (the positive control)."""
    monkeypatch.setattr(messages, "RESUME_MAX_UPDATES", 3)
    amy = server.register()
    room = server.create_room(amy)
    sent = [say(server, amy, room, f"m{i}") for i in range(5)]
    last = sent[-1]["id"]
    base = f"/api/rooms/{room}/messages"
    for message in sent[:3]:
        rest(server, amy, "PUT", f"{base}/{message['id']}/reactions/:a:")
    path = f"/ws/rooms/{room}?since={last}"
    with server.ws(path, amy) as ws:
        hello = welcome(ws)
        assert "truncated" not in hello and len(hello["updates"]) == 3
    rest(server, amy, "PUT", f"{base}/{sent[3]['id']}/reactions/:a:")
    with server.ws(path, amy) as ws:
        hello = welcome(ws)
        assert hello["truncated"] is True and hello["updates"] == []
        assert hello["history"] == list(history(server, amy, room).values())


def test_a_change_whose_event_was_lost_is_read_from_the_database(server: Server) -> None:
    """A change stored but never announced (its event lost, as pub/sub may) is found when
    the room's next event shows the gap in its sequence: sockets get its `update`, with the
    message's current state, before the message that came after it."""
    amy = server.register()
    room = server.create_room(amy)
    target = say(server, amy, room, "as posted")
    with server.ws(f"/ws/rooms/{room}", amy) as ws:
        welcome(ws)
        # A change made behind the server's back: numbered, recorded, never published.
        of_room = f"(SELECT id FROM rooms WHERE name = '{room}')"
        run_sql(server, f"UPDATE rooms SET last_seq = last_seq + 1 WHERE name = '{room}'")
        run_sql(
            server,
            "INSERT INTO message_changes (room_id, seq, message_seq)"
            f" SELECT id, last_seq, {target['id']} FROM rooms WHERE name = '{room}'",
        )
        run_sql(
            server,
            "UPDATE messages SET body = 'changed unseen',"
            f" change_seq = (SELECT last_seq FROM rooms WHERE name = '{room}')"
            f" WHERE room_id = {of_room} AND seq = {target['id']}",
        )
        after = say(server, amy, room, "after the gap")
        frames = frames_until(ws, of_type("message", id=after["id"]))
        updates = [f for f in frames if f["type"] == "update"]
        assert [u["message"]["body"] for u in updates] == ["changed unseen"]
        assert after["id"] == target["id"] + 2
