"""The browser client's composer, outbox, connection state, error pages, dark mode, narrow
screens and axe-core, in Chromium against real servers.

One server for the module, its first account (the admin) with a 32-character name, and a
low message rate limit, so that pasting a few dozen messages hits it. The screenshots land
in test-artifacts/ (client-room-dark.png, client-room-phone.png); the README shows copies of
them from docs/screenshots/."""

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from chat.app import create_app
from chat.cli import uvicorn_options
from chat.db import migrate
from chat.logs import log_config
from tests.conftest import Account, Server, make_settings, unique
from tests.test_browser import ARTIFACTS, TIMEOUT_MS, Person, chromium
from tests.test_browser_protocol import sent_messages

pytest.importorskip("axe_playwright_python", reason="the test extra is not installed")
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

# As for the other browser tests: taken here on every run, copied to docs/screenshots/ by hand.
SCREENSHOTS = ARTIFACTS
# Low enough that 30 pasted messages hit it, high enough that the socket's error budget
# (`CHAT_ABUSE_MAX_ERRORS`, 30 in 10 s) is not spent by the refusals.
RATE_BURST = 10
RATE_PER_SEC = 5.0
BODY_MAX = 4000
LONG = 32


def long_name(prefix: str) -> str:
    return (prefix + unique("") + "x" * LONG)[:LONG]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        make_settings(
            tmp_path_factory.mktemp("client"), rate_burst=RATE_BURST, rate_per_sec=RATE_PER_SEC
        )
    )
    with ThreadPoolExecutor(1) as pool:
        pool.submit(migrate, server.settings).result()
    # Its own start, not `Server.start`: a listening socket with SO_REUSEADDR from the first,
    # or the connections it leaves in TIME_WAIT would keep the port from a restart.
    start_on_same_port(server)
    server.admin = server.register(long_name("admin"))
    assert server.admin.is_admin
    yield server
    server.stop()


def restart(server: Server) -> None:
    """Stop the server (its database stays) and start it again on the same port."""
    stop(server)
    start_on_same_port(server)


def stop(server: Server) -> None:
    assert server.server is not None and server.thread is not None
    # uvicorn serves a duplicate of the listening socket it was given: the original stays
    # open (and listening) until closed here, which frees the port for the restart.
    given: list[socket.socket] = getattr(server.thread, "_kwargs", {}).get("sockets", [])
    server.server.should_exit = True
    server.thread.join(15)
    assert not server.thread.is_alive()
    for sock in given:
        sock.close()


def start_on_same_port(server: Server) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Port 0 the first time: any free one.
    deadline = time.monotonic() + 15
    while True:
        try:
            sock.bind(("127.0.0.1", server.port))
            server.port = sock.getsockname()[1]
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    config = uvicorn.Config(
        create_app(server.settings),
        log_config=log_config("WARNING"),
        **uvicorn_options(server.settings),
    )
    server.server = uvicorn.Server(config)
    server.thread = threading.Thread(
        target=server.server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    server.thread.start()
    deadline = time.monotonic() + 15
    while not server.server.started:
        assert time.monotonic() < deadline and server.thread.is_alive(), "server did not start"
        time.sleep(0.02)


def person_in(browser: Browser, server: Server, account: Account, **context: Any) -> Person:
    person = Person(browser.new_context(**context), server.url)
    person.sign_in(account.username)
    return person


def open_room(person: Person, room: str) -> None:
    person.goto(f"/rooms/{room}")
    expect(person.page.locator("#status")).to_have_text("live")


def bodies(server: Server, account: Account, room: str) -> list[str]:
    with httpx.Client(base_url=server.url, headers=account.headers, timeout=15) as http:
        r = http.get(f"/api/rooms/{room}/messages", params={"limit": 200})
    assert r.status_code == 200, r.text
    return [m["body"] for m in r.json()["messages"]]


def shown(page: Page) -> Any:
    return page.locator("#messages li[data-id] .body")


def pending(page: Page) -> Any:
    return page.locator("#messages li.pending")


def type_message(page: Page, text: str) -> None:
    page.fill("#body", text)
    page.press("#body", "Enter")


def test_outbox_survives_a_server_restart_and_a_page_reload(srv: Server, browser: Browser) -> None:
    """Typed while the server is away, messages show as pending with an offline banner; with
    the server back, "Retry now" sends them; typed while away again, a page reload keeps them
    and sends them. Each is stored once, in the order typed, and no error line is left."""
    account = srv.register()
    room = srv.create_room(account)
    person = person_in(browser, srv, account)
    page = person.page
    try:
        open_room(person, room)
        type_message(page, "before")
        expect(shown(page)).to_have_text(["before"])

        stop(srv)
        expect(page.locator("#offline")).to_be_visible(timeout=15_000)
        expect(page.locator("#offline-message")).to_contain_text("Offline")
        expect(page.locator("#reconnect")).to_have_text("Retry now")
        # A reaction while away: an error line, which must not outlive the outage.
        page.locator("#messages li[data-id] .menu-button").click()
        page.locator(".message-menu button.emoji").first.click()
        expect(page.locator("#error")).to_contain_text("Not connected")
        for text in ("one", "two\nlines"):
            type_message(page, text)
        expect(pending(page)).to_have_count(2)
        expect(pending(page).locator(".body")).to_have_text(["one", "two\nlines"])
        start_on_same_port(srv)
        page.click("#reconnect")
        expect(page.locator("#status")).to_have_text("live")
        expect(page.locator("#offline")).to_be_hidden()
        expect(shown(page)).to_have_text(["before", "one", "two\nlines"])
        expect(pending(page)).to_have_count(0)
        expect(page.locator("#error")).to_be_hidden()

        stop(srv)
        expect(page.locator("#status")).not_to_have_text("live")
        type_message(page, "three")
        type_message(page, "four")
        expect(pending(page)).to_have_count(2)
        start_on_same_port(srv)
        # Only the page's localStorage knows of them now.
        page.reload()
        expect(page.locator("#status")).to_have_text("live")
        expect(shown(page)).to_have_text(["before", "one", "two\nlines", "three", "four"])
        expect(pending(page)).to_have_count(0)
        assert bodies(srv, account, room) == ["before", "one", "two\nlines", "three", "four"]
        assert (
            page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('chat.outbox.'))")
            == []
        )
    finally:
        person.context.close()


def test_thirty_pasted_messages_hit_the_rate_limit_and_all_arrive_in_order(
    srv: Server, browser: Browser
) -> None:
    """30 messages typed at once: the server refuses some for the rate limit, they wait and go
    again by themselves, each under its one nonce; a reload while some still wait loses none.
    All are stored once, in order. A second tab of the same room shows them but sends none."""
    account = srv.register()
    room = srv.create_room(account)
    person = person_in(browser, srv, account)
    page = person.page
    other = person.context.new_page()
    other.set_default_timeout(TIMEOUT_MS)
    texts = [f"pasted {i:02}" for i in range(30)]
    sent_here = sent_messages(page)
    sent_there = sent_messages(other)
    try:
        open_room(person, room)
        other.goto(f"{srv.url}/rooms/{room}")
        expect(other.locator("#status")).to_have_text("live")
        # Pasted in one go: each line sent with Enter, as fast as the page takes them.
        page.evaluate(
            """texts => {
                const input = document.getElementById("body");
                for (const text of texts) {
                    input.value = text;
                    const enter = {key: "Enter", bubbles: true};
                    input.dispatchEvent(new KeyboardEvent("keydown", enter));
                }
            }""",
            texts[:20],
        )
        waiting = page.locator("#messages li.pending .pending-state", has_text="waiting")
        expect(waiting).not_to_have_count(0)
        # The other tab shows what waits, and sends nothing.
        expect(pending(other)).not_to_have_count(0)
        expect(shown(other)).to_have_text(texts[:20], timeout=30_000)
        assert sent_there == []
        other.close()
        for text in texts[20:]:
            type_message(page, text)
        page.reload()
        expect(shown(page)).to_have_text(texts, timeout=30_000)
        expect(pending(page)).to_have_count(0)
    finally:
        person.context.close()
    assert bodies(srv, account, room) == texts
    nonces: dict[str, set[str]] = {}
    for frame in sent_here:
        nonces.setdefault(frame["body"], set()).add(frame["nonce"])
    assert all(len(n) == 1 for n in nonces.values()), nonces
    # The limit did refuse some, and they went again.
    assert len(sent_here) > len(nonces)


def test_a_refused_message_offers_retry_and_discard(srv: Server, browser: Browser) -> None:
    """Refused for what it is, a message stays in the list with the reason, Retry (under the
    same nonce) and Discard (its text back into the composer); the next message goes on."""
    account = srv.register()
    room = srv.create_room(account)
    bad = "nul \x00 inside"
    person = person_in(browser, srv, account)
    page = person.page
    try:
        sent = sent_messages(page)
        open_room(person, room)
        type_message(page, bad)
        refused = page.locator("#messages li.refused")
        expect(refused.locator(".pending-state")).to_have_text(
            "Not sent: body must not contain NUL characters"
        )
        expect(page.locator("#error")).to_have_text(
            "Not sent: body must not contain NUL characters."
        )
        type_message(page, "fine")
        expect(shown(page)).to_have_text(["fine"])
        refused.get_by_role("button", name="Retry").click()
        expect(page.locator("#error")).to_be_visible()
        expect(refused).to_have_count(1)
        assert [f["body"] for f in sent] == [bad, "fine", bad]
        assert sent[0]["nonce"] == sent[2]["nonce"]
        page.reload()
        expect(refused).to_have_count(1)
        refused.get_by_role("button", name="Discard").click()
        expect(refused).to_have_count(0)
        expect(page.locator("#body")).to_have_value(bad)
        expect(page.locator("#body")).to_be_focused()
    finally:
        person.context.close()
    assert bodies(srv, account, room) == ["fine"]


def test_composer_lines_counter_and_draft(srv: Server, browser: Browser) -> None:
    """Focused on entering the room; Shift+Enter breaks the line, Enter sends, pasted newlines
    stay; a counter near the limit, and a refusal over it instead of cutting the text; the
    draft survives a reload and signing in again, and goes once sent."""
    account = srv.register()
    room = srv.create_room(account)
    person = person_in(browser, srv, account)
    page = person.page
    try:
        open_room(person, room)
        box = page.locator("#body")
        expect(box).to_be_focused()
        page.keyboard.type("line one")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("line two")
        height = box.bounding_box()["height"]  # type: ignore[index]
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("line three")
        assert box.bounding_box()["height"] > height  # type: ignore[index]
        page.keyboard.press("Enter")
        box.fill("pasted\nwith\n\nnewlines")
        page.keyboard.press("Enter")
        expect(shown(page)).to_have_text(
            ["line one\nline two\nline three", "pasted\nwith\n\nnewlines"]
        )

        counter = page.locator("#body-counter")
        box.fill("short")
        expect(counter).to_be_hidden()
        box.fill("é" * (BODY_MAX - 1))
        expect(counter).to_have_text("3,999 / 4,000")
        box.fill("a" * (BODY_MAX + 10))
        expect(counter).to_have_text("10 characters over the limit of 4,000")
        page.keyboard.press("Enter")
        expect(page.locator("#error")).to_contain_text("10 characters too long")
        expect(pending(page)).to_have_count(0)
        assert len(box.input_value()) == BODY_MAX + 10

        box.fill("a draft I keep")
        page.reload()
        expect(box).to_have_value("a draft I keep")
        person.context.clear_cookies()
        person.goto(f"/rooms/{room}")
        page.wait_for_url("**/login?next=**")
        page.fill("#username", account.username)
        page.fill("#password", account.password)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"**/rooms/{room}")
        expect(box).to_have_value("a draft I keep")
        page.keyboard.press("Enter")
        expect(shown(page)).to_have_count(3)
        page.reload()
        expect(page.locator("#status")).to_have_text("live")
        expect(box).to_have_value("")
    finally:
        person.context.close()
    assert bodies(srv, account, room)[-1] == "a draft I keep"


def test_banned_shown_in_the_room_not_sent_to_sign_in(srv: Server, browser: Browser) -> None:
    """Closed with 4403 (banned), the room page says so and stays where it is."""
    assert srv.admin is not None
    owner, account = srv.register(), srv.register()
    room = srv.create_room(owner)
    person = person_in(browser, srv, account)
    page = person.page
    try:
        open_room(person, room)
        with httpx.Client(base_url=srv.url, headers=owner.headers, timeout=15) as http:
            r = http.put(f"/api/rooms/{room}/bans/{account.username}")
            assert r.status_code in (200, 204), r.text
        expect(page.locator("#notice")).to_have_text("You are banned from this room.")
        expect(page.locator("#body")).to_be_disabled()
        expect(page.locator("#offline")).to_be_hidden()
        assert page.url == f"{srv.url}/rooms/{room}"
    finally:
        person.context.close()


def test_error_pages(srv: Server) -> None:
    """Unknown pages, a method a page does not take and a crash get a styled page; the API,
    and a client asking for JSON, get JSON."""
    app = srv.server.config.app  # type: ignore[union-attr]
    assert isinstance(app, FastAPI)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test-crash", boom)
    app.add_api_route("/api/test-crash", boom)
    with httpx.Client(base_url=srv.url, timeout=15) as http:
        for path, method, code, heading in [
            ("/no-such-page", "GET", 404, "Page not found"),
            ("/static/missing.js", "GET", 404, "Page not found"),
            ("/logout", "GET", 405, "Not here"),
            ("/test-crash", "GET", 500, "Something went wrong"),
        ]:
            # A connection each: the server closes the one a crash happened on.
            r = httpx.request(method, srv.url + path, headers={"Accept": "text/html"})
            assert r.status_code == code, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            assert f'<h1 id="error-title">{heading}</h1>' in r.text
            assert "content-security-policy" in r.headers
        assert "POST" in http.get("/logout").headers["allow"]
        for path, code in [("/api/no-such", 404), ("/api/test-crash", 500)]:
            r = httpx.get(srv.url + path, headers={"Accept": "text/html"})
            assert r.status_code == code
            assert r.headers["content-type"] == "application/json"
            assert "detail" in r.json()
        r = http.get("/no-such-page", headers={"Accept": "application/json"})
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_error_page_in_the_browser(srv: Server, browser: Browser) -> None:
    """Signed in, an unknown page keeps the usual header and leads back to the rooms."""
    assert srv.admin is not None
    person = person_in(browser, srv, srv.admin)
    try:
        person.goto("/no/such/page")
        expect(person.page.locator("#error-title")).to_have_text("Page not found")
        # Signed in: the header is the usual one.
        expect(person.page.locator("#me")).to_have_text(srv.admin.username)
        person.page.click("text=Back to the rooms")
        person.page.wait_for_url("**/rooms")
    finally:
        person.context.close()


def colours(page: Page) -> tuple[str, str]:
    found: tuple[str, str] = page.evaluate(
        """() => {
            const style = getComputedStyle(document.body);
            const card = getComputedStyle(document.querySelector(".card"));
            return [style.backgroundColor, card.color];
        }"""
    )
    return found


def no_horizontal_scroll(page: Page, what: str) -> None:
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    wide = page.evaluate(
        """() => Array.from(document.querySelectorAll("body *"))
            .filter(e => e.getBoundingClientRect().right > innerWidth + 1)
            .slice(0, 5).map(e => e.tagName + "#" + e.id + "." + e.className)"""
    )
    assert widths[0] <= widths[1], f"{what}: {widths}, wider than the screen: {wide}"


def a_busy_room(server: Server, owner: Account, other: Account) -> str:
    room = server.create_room(owner, unique("a-room-with-a-rather-long-name-to-wrap-"))
    with httpx.Client(base_url=server.url, timeout=15) as http:
        assert (
            http.put(
                f"/api/rooms/{room}/members/{other.username}", headers=other.headers
            ).status_code
            == 204
        )
        for account, body in [
            (owner, "Morning! The deploy went out at 9."),
            (other, f"@{owner.username} thanks, looks good from here.\nTwo lines, even."),
            (owner, "https://example.com/" + "a-very-long-link-" * 6),
        ]:
            r = http.post(
                f"/api/rooms/{room}/messages", json={"body": body}, headers=account.headers
            )
            assert r.status_code == 201, r.text
    return room


def test_dark_mode_phone_and_long_names(srv: Server, browser: Browser) -> None:
    """Dark by the system's preference (other colours than light); at 390x844 with 32-character
    names, and at 200 % zoom, nothing scrolls sideways and "Sign out" stays on screen.
    Screenshots for the README."""
    assert srv.admin is not None
    admin = srv.admin
    other = srv.register(long_name("guest"))
    room = a_busy_room(srv, admin, other)
    light = person_in(browser, srv, admin, viewport={"width": 1280, "height": 800})
    dark = person_in(
        browser, srv, admin, viewport={"width": 1280, "height": 800}, color_scheme="dark"
    )
    phone = person_in(
        browser,
        srv,
        admin,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        for person in (light, dark):
            open_room(person, room)
        assert colours(light.page) != colours(dark.page)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        expect(dark.page.locator("#members li")).to_have_count(2)
        dark.page.screenshot(path=str(SCREENSHOTS / "client-room-dark.png"))

        page = phone.page
        for path in ["/rooms", f"/rooms/{room}", "/account", "/admin", "/admin/users", "/nope"]:
            phone.goto(path)
            if path == f"/rooms/{room}":
                expect(page.locator("#status")).to_have_text("live")
            no_horizontal_scroll(page, path)
            sign_out = page.locator(".topbar").get_by_role("button", name="Sign out").bounding_box()
            assert sign_out is not None
            assert sign_out["x"] >= 0 and sign_out["x"] + sign_out["width"] <= 390, path
        phone.goto(f"/rooms/{room}")
        expect(page.locator("#status")).to_have_text("live")
        expect(page.locator("#members li")).to_have_count(2)
        page.screenshot(path=str(SCREENSHOTS / "client-room-phone.png"))

        # 200 % zoom of a 1280x800 window: a 640x400 layout at twice the pixels.
        zoomed = light.context.new_page()
        zoomed.set_viewport_size({"width": 640, "height": 400})
        for path in [f"/rooms/{room}", "/admin/users"]:
            zoomed.goto(srv.url + path)
            no_horizontal_scroll(zoomed, f"{path} at 200 %")
    finally:
        for person in (light, dark, phone):
            person.context.close()


def accessible(page: Page, what: str) -> None:
    """axe-core finds nothing on the page as it is, in light and in dark."""
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        assert page.evaluate(f"matchMedia('(prefers-color-scheme: {scheme})').matches")
        results = Axe().run(page)
        assert results.violations_count == 0, f"{what} ({scheme}):\n{results.generate_report()}"


def test_axe_on_every_page(srv: Server, browser: Browser) -> None:
    """axe-core finds no violation on any page, under the pages' own CSP, light and dark."""
    assert srv.admin is not None
    context = browser.new_context()
    outsider = Person(context, srv.url)
    try:
        for path in ["/login", "/register", "/no-such-page"]:
            outsider.goto(path)
            accessible(outsider.page, path)
    finally:
        context.close()
    other = srv.register()
    room = a_busy_room(srv, srv.admin, other)
    with httpx.Client(base_url=srv.url, headers=srv.admin.headers, timeout=15) as http:
        r = http.post("/api/dms", json={"users": [other.username]})
        assert r.status_code in (200, 201), r.text
        dm = r.json()["name"]
    person = person_in(browser, srv, srv.admin)
    try:
        for path in [
            "/rooms",
            f"/rooms/{room}",
            f"/rooms/{dm}",
            "/account",
            "/admin",
            "/admin/users",
            "/docs",
            "/no-such-page",
        ]:
            person.goto(path)
            if path.startswith("/rooms/"):
                expect(person.page.locator("#status")).to_have_text("live")
                # A refused message, with its Retry and Discard, is on the page too.
                type_message(person.page, "nul \x00 refused")
                expect(person.page.locator("#messages li.refused")).to_have_count(1)
            if path == "/docs":
                person.page.wait_for_selector(".swagger-ui .info")
            accessible(person.page, path)
    finally:
        person.context.close()
