"""The room and admin pages' side of the WebSocket protocol, in Chromium: what each close code
does, refused and rate-limited messages, resuming after a truncated welcome, reconnect jitter.

Where the server cannot be made to do something on demand (close with 4403, answer
`unavailable`), the page talks to a stand-in server routed by Playwright instead."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from chat.closecodes import CloseCode
from tests.conftest import Account, Server
from tests.test_browser import Person, chromium
from tests.ws_helpers import history, post, seed, welcome

from playwright.sync_api import Browser, Page, WebSocket, WebSocketRoute, expect  # isort: skip
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # isort: skip

# A window in which a page that is not meant to reconnect would have done so: its first
# reconnect comes within half a second.
QUIET_MS = 3_000
TS = "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@contextmanager
def signed_in(browser: Browser, srv: Server, account: Account) -> Iterator[Person]:
    person = Person(browser.new_context(), srv.url)
    try:
        person.sign_in(account.username)
        yield person
    finally:
        person.context.close()


def open_room(person: Person, room: str) -> None:
    person.goto(f"/rooms/{room}")
    expect(person.page.locator("#status")).to_have_text("live")


def kick_all(srv: Server, code: int) -> None:
    """Close every room socket of the server with `code`, as the server itself does."""
    hub = srv.server.config.app.state.services.hub  # type: ignore[union-attr]
    loop = srv.server.servers[0].get_loop()  # type: ignore[union-attr]

    def kick() -> None:
        for connection in list(hub.all()):
            connection.kick(code, "test")

    loop.call_soon_threadsafe(kick)


def sent_messages(page: Page) -> list[dict[str, Any]]:
    """Every message frame the page sends over the sockets it opens from now on."""
    sent: list[dict[str, Any]] = []

    def on_socket(ws: WebSocket) -> None:
        def on_frame(payload: str | bytes) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "message":
                sent.append(frame)

        ws.on("framesent", on_frame)

    page.on("websocket", on_socket)
    return sent


def shown_ids(page: Page) -> list[int]:
    return page.eval_on_selector_all(
        "#messages li[data-id]", "items => items.map(li => Number(li.dataset.id))"
    )


def wait_for_presence(page: Page, srv: Server, room: str, users: list[str]) -> None:
    """Until the server lists exactly `users` as active in `room`."""
    assert srv.admin is not None
    http = srv.client(headers=srv.admin.headers)
    for _ in range(100):
        active = http.get("/api/admin/active-users").json()["rooms"].get(room, [])
        if active == users:
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"{room} still has {active}")


def sign_in_then(path: str) -> Callable[[str], bool]:
    """Matches the sign-in page's URL that comes back to `path`."""

    def matches(url: str) -> bool:
        parts = urlsplit(url)
        return parts.path == "/login" and parse_qs(parts.query).get("next") == [path]

    return matches


def welcome_frame(room: str, user: str, messages: list[dict[str, Any]]) -> str:
    return json.dumps(
        {"type": "welcome", "room": room, "user": user, "users": [user], "history": messages}
    )


def test_truncated_welcome_then_older_pages_leave_no_gap(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    """Back after more than 500 messages, the page shows the newest 500, and "load older"
    brings back every message before them, each once, with no gap."""
    srv = make_server(rate_burst=1000, rate_per_sec=1000)
    account = srv.register()
    room = srv.create_room(account)
    first = post(srv.client(), account, room, "before").json()
    with signed_in(browser, srv, account) as person:
        page = person.page
        open_room(person, room)
        expect(page.locator("#messages li .body")).to_have_text(["before"])

        # Offline while 560 messages are posted: the page cannot come back before they are in.
        person.context.set_offline(True)
        kick_all(srv, CloseCode.TOO_SLOW)
        expect(page.locator("#status")).not_to_have_text("live")
        seeded = seed(srv, account, room, 560)
        person.context.set_offline(False)
        expect(page.locator("#status")).to_have_text("live", timeout=20_000)
        expect(page.locator("#messages li[data-id]")).to_have_count(500)

        older = page.locator("#older")
        while older.is_visible():
            count = len(shown_ids(page))
            older.click()
            page.wait_for_function(
                "count => document.querySelectorAll('#messages li[data-id]').length !== count"
                " || document.getElementById('older').hidden",
                arg=count,
            )
        assert shown_ids(page) == [first["id"]] + [m["id"] for m in seeded]


def test_too_many_sockets_shown_and_not_retried_at_once(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    """Refused for holding too many sockets (4429), the page says so in its banner, stays, and
    does not retry for a long while; "Retry now" retries at once."""
    srv = make_server(max_connections_per_user=1)
    account = srv.register()
    room = srv.create_room(account)
    with signed_in(browser, srv, account) as person:
        page = person.page
        # The rooms page holds the user's one socket (`/ws/me`), as every page of the app
        # shell does: leave it for a page without (the API's documentation).
        person.goto("/docs")
        for _ in range(100):
            if srv.open_connections() == 0:
                break
            page.wait_for_timeout(50)
        assert srv.open_connections() == 0
        with srv.ws(f"/ws/rooms/{room}", account) as held:
            welcome(held)
            with page.expect_websocket():
                person.goto(f"/rooms/{room}")
            expect(page.locator("#status")).to_have_text(
                "Too many open connections — close other tabs"
            )
            expect(page.locator("#reconnect")).to_be_visible()
            expect(page.locator("#offline-message")).to_contain_text("Too many connections")
            with pytest.raises(PlaywrightTimeoutError), page.expect_websocket(timeout=QUIET_MS):
                pass
            assert page.url == f"{srv.url}/rooms/{room}"
        wait_for_presence(page, srv, room, [])

        with page.expect_websocket():
            page.click("#reconnect")
        expect(page.locator("#status")).to_have_text("live")
        expect(page.locator("#reconnect")).to_be_hidden()


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        (CloseCode.FORBIDDEN, "You are not allowed in this room"),
        (CloseCode.NOT_FOUND, "no such room"),
    ],
)
def test_final_close_codes_shown_and_not_retried(
    server: Server, browser: Browser, code: int, shown: str
) -> None:
    """Closed with 1012, the page comes back with `since`; closed with 4403 or 4404, it says
    why and stays away."""
    account = server.register()
    room = server.create_room(account)
    opened: list[str] = []
    closes = iter([CloseCode.RESTARTING, code])

    def serve(ws: WebSocketRoute) -> None:
        opened.append(ws.url)
        message = {"id": 7, "room": room, "user": account.username, "body": "hi", "ts": TS}
        ws.send(welcome_frame(room, account.username, [message]))
        ws.close(code=next(closes), reason="test")

    with signed_in(browser, server, account) as person:
        person.page.route_web_socket("**/ws/rooms/**", serve)
        person.goto(f"/rooms/{room}")
        expect(person.page.locator("#status")).to_have_text(shown)
        assert len(opened) == 2
        assert opened[1].endswith(f"/ws/rooms/{room}?since=7")
        person.page.wait_for_timeout(QUIET_MS)
        assert len(opened) == 2
        assert person.page.url == f"{server.url}/rooms/{room}"


def test_signed_out_elsewhere_goes_to_sign_in(server: Server, browser: Browser) -> None:
    """Signing out in another tab closes the room's and the admin's sockets with 1008, and both
    pages go to the sign-in page."""
    assert server.admin is not None
    account = server.admin
    room = server.create_room(account)
    with signed_in(browser, server, account) as person:
        open_room(person, room)
        admin = person.context.new_page()
        admin.goto(f"{server.url}/admin")
        expect(admin.locator("#status")).to_have_text("live")

        other = person.context.new_page()
        other.goto(f"{server.url}/rooms")
        other.click("text=Sign out")
        person.page.wait_for_url(sign_in_then(f"/rooms/{room}"))
        admin.wait_for_url(sign_in_then("/admin"))


def test_rate_limited_messages_sent_again_in_order(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    """Typed faster than the rate limit allows, every message is stored once, in the order
    typed, each under one nonce, and none stays pending."""
    srv = make_server(rate_burst=1, rate_per_sec=2)
    account = srv.register()
    room = srv.create_room(account)
    texts = [f"quick {i}" for i in range(5)]
    with signed_in(browser, srv, account) as person:
        page = person.page
        sent = sent_messages(page)
        open_room(person, room)
        for text in texts:
            person.say(text)
        expect(page.locator("#messages li.pending")).not_to_have_count(0)
        expect(page.locator("#messages li[data-id] .body")).to_have_text(texts)
        expect(page.locator("#messages li.pending")).to_have_count(0)
    assert [m["body"] for m in history(srv, account, room)] == texts
    nonces = {text: {f["nonce"] for f in sent if f["body"] == text} for text in texts}
    assert all(len(n) == 1 for n in nonces.values()), nonces
    # The limit did refuse some, and they went again.
    assert len(sent) > len(texts)


def test_refused_message_shown_and_never_sent_again(server: Server, browser: Browser) -> None:
    """A message the server refuses for what it is stays in the list, marked refused with the
    reason (Retry and Discard are the user's), and is not sent again by itself, not even after
    a reconnect; the next message goes through."""
    account = server.register()
    room = server.create_room(account)
    bad = "nul \x00 inside"
    with signed_in(browser, server, account) as person:
        page = person.page
        sent = sent_messages(page)
        open_room(person, room)
        person.say(bad)
        expect(page.locator("#error")).to_have_text(
            "Not sent: body must not contain NUL characters."
        )
        expect(page.locator("#messages li.refused .body")).to_have_text([bad])

        with page.expect_websocket():
            kick_all(server, CloseCode.RESTARTING)
        expect(page.locator("#status")).to_have_text("live")
        expect(page.locator("#error")).to_be_hidden()
        person.say("fine")
        expect(page.locator("#messages li[data-id] .body")).to_have_text(["fine"])
        expect(page.locator("#messages li.refused")).to_have_count(1)
    assert [m["body"] for m in history(server, account, room)] == ["fine"]
    assert [f["body"] for f in sent] == [bad, "fine"]


def test_unavailable_message_sent_again_with_its_nonce(server: Server, browser: Browser) -> None:
    """A message refused because storage is down stays pending and is sent again a few
    seconds later under the same nonce; acknowledged, it shows once."""
    account = server.register()
    room = server.create_room(account)
    received: list[dict[str, Any]] = []

    def serve(ws: WebSocketRoute) -> None:
        def on_message(text: str | bytes) -> None:
            frame = json.loads(text)
            if frame["type"] != "message":
                return
            received.append(frame)
            nonce = frame["nonce"]
            if len(received) == 1:
                error = {"type": "error", "code": "unavailable", "detail": "x", "nonce": nonce}
                ws.send(json.dumps(error))
            else:
                message = {"id": 1, "room": room, "user": account.username, "ts": TS}
                ws.send(json.dumps({"type": "message", **message, **frame}))

        ws.on_message(on_message)
        ws.send(welcome_frame(room, account.username, []))

    with signed_in(browser, server, account) as person:
        page = person.page
        page.route_web_socket("**/ws/rooms/**", serve)
        open_room(person, room)
        person.say("hello")
        expect(page.locator("#messages li.pending .body")).to_have_text(["hello"])
        # The page waits 2-5 s before sending it again: more than expect's default.
        expect(page.locator("#messages li[data-id] .body")).to_have_text(["hello"], timeout=10_000)
        expect(page.locator("#messages li.pending")).to_have_count(0)
    assert [f["body"] for f in received] == ["hello", "hello"]
    assert received[0]["nonce"] == received[1]["nonce"]


def test_reconnect_delays_have_full_jitter(server: Server, browser: Browser) -> None:
    """A reconnect waits anywhere from nothing to base·2^attempt (capped), drawn anew each
    time, so that pages dropped together do not come back together."""
    page = browser.new_page()
    try:
        page.goto(f"{server.url}/login")
        found = page.evaluate(
            """async () => {
              const { backoffMs, betweenMs } = await import("/static/backoff.js");
              return {
                least: backoffMs(3, 500, 10000, () => 0),
                most: backoffMs(3, 500, 10000, () => 1),
                capped: backoffMs(10, 500, 10000, () => 1),
                draws: Array.from({ length: 20 }, () => backoffMs(3, 500, 10000)),
                long: [betweenMs(30000, 60000, () => 0), betweenMs(30000, 60000, () => 1)],
              };
            }"""
        )
    finally:
        page.close()
    assert (found["least"], found["most"], found["capped"]) == (0, 4000, 10000)
    assert all(0 <= d <= 4000 for d in found["draws"])
    assert len(set(found["draws"])) > 1
    assert found["long"] == [30000, 60000]
