"""The pages in a real browser: Chromium driven by Playwright."""

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, Server, need, shared_chromium, unique

CHROMIUM = os.environ.get("CHAT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"
TIMEOUT_MS = 10_000

pytest.importorskip("playwright", reason="the test extra is not installed")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402


@contextmanager
def chromium() -> Iterator[Browser]:
    """The Chromium that the browser tests running one after another share (see
    `conftest.SharedChromium`, which stops it)."""
    need(Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None, "Chromium")
    with shared_chromium.use(CHROMIUM, CHROMIUM_FLAGS) as browser:
        yield browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


class Person:
    """One browser context (its own cookies) that records what the page complains about."""

    def __init__(self, context: BrowserContext, base_url: str) -> None:
        self.context = context
        self.base_url = base_url
        self.page: Page = context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )

    def _dialog(self, dialog: object) -> None:
        self.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    def goto(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        self.goto("/login")
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_url("**/rooms")

    def say(self, text: str) -> None:
        self.page.fill("#body", text)
        self.page.press("#body", "Enter")


@pytest.fixture
def people(browser: Browser, server: Server) -> Iterator[list[Person]]:
    made: list[Person] = []

    def person() -> Person:
        p = Person(browser.new_context(), server.url)
        made.append(p)
        return p

    yield [person(), person(), person()]
    for p in made:
        p.context.close()


def test_register_sign_in_chat_and_admin_view(server: Server, people: list[Person]) -> None:
    """Two people chat in `general` through the pages, see each other, and the admin sees both."""
    alice, bob, admin = people
    alice_name, bob_name = unique("alice"), unique("bob")

    alice.goto("/register")
    alice.page.fill("#username", alice_name)
    alice.page.fill("#password", PASSWORD)
    alice.page.click("#register-form button[type=submit]")
    alice.page.wait_for_url("**/rooms")
    # The page's own first reads done: one still on its way when the session ends is
    # answered 401, which the browser logs as an error (this test allows none).
    alice.page.wait_for_load_state("networkidle")
    alice.page.click("text=Sign out")
    alice.page.wait_for_url("**/login")
    alice.sign_in(alice_name)
    alice.page.click("#rooms >> text=#general")
    alice.page.wait_for_url("**/rooms/general")
    expect(alice.page.locator("#status")).to_have_text("live")

    server.register(bob_name)
    bob.sign_in(bob_name)
    bob.goto("/rooms/general")
    expect(bob.page.locator("#status")).to_have_text("live")

    for person in (alice, bob):
        expect(person.page.locator("#users li", has_text=alice_name)).to_have_count(1)
        expect(person.page.locator("#users li", has_text=bob_name)).to_have_count(1)

    alice.say("hello bob")
    expect(bob.page.locator("#messages li", has_text="hello bob")).to_have_count(1)
    bob.say(XSS)
    expect(alice.page.locator("#messages li .body", has_text=XSS)).to_have_count(1)
    expect(bob.page.locator("#messages li .body", has_text=XSS)).to_have_count(1)

    assert server.admin is not None
    admin.sign_in(server.admin.username)
    admin.goto("/admin")
    row = admin.page.locator("#active-rooms tr[data-room=general]")
    expect(row).to_contain_text(alice_name)
    expect(row).to_contain_text(bob_name)

    ARTIFACTS.mkdir(exist_ok=True)
    alice.page.screenshot(path=str(ARTIFACTS / "room.png"))

    bob.page.close()
    expect(row).not_to_contain_text(bob_name)
    expect(row).to_contain_text(alice_name)

    for person in (alice, admin):
        assert person.dialogs == [], "a script ran from message text"
        assert person.page.locator("#messages img").count() == 0
        assert person.console_errors == []


def test_history_shown_on_open(server: Server, people: list[Person]) -> None:
    """Opening a room shows its earlier messages, oldest first."""
    account = server.register()
    room = server.create_room(account)
    http = server.client(headers=account.headers)
    for text in ("first", "second", "third"):
        assert http.post(f"/api/rooms/{room}/messages", json={"body": text}).status_code == 201
    reader = people[0]
    reader.sign_in(account.username)
    reader.goto(f"/rooms/{room}")
    expect(reader.page.locator("#messages li .body")).to_have_text(["first", "second", "third"])


def test_create_room_from_room_list(server: Server, people: list[Person]) -> None:
    """The room list's form creates a room and opens it."""
    account = server.register()
    person = people[0]
    person.sign_in(account.username)
    name = unique("made-")
    person.page.fill("#room-name", name)
    person.page.click("#create-room button[type=submit]")
    person.page.wait_for_url(f"**/rooms/{name}")
    expect(person.page.locator("#status")).to_have_text("live")


def test_pages_require_sign_in(server: Server, people: list[Person]) -> None:
    """Signed-out visitors of a room are sent to the sign-in page, and come back after it."""
    account = server.register()
    person = people[0]
    person.goto("/rooms/general")
    person.page.wait_for_url("**/login?next=/rooms/general")
    person.page.fill("#username", account.username)
    person.page.fill("#password", PASSWORD)
    person.page.click("#login-form button[type=submit]")
    person.page.wait_for_url("**/rooms/general")


def test_reconnects_and_catches_up(make_server: Callable[..., Server], browser: Browser) -> None:
    """After the server drops the socket, the page reconnects with `since` and shows what it
    missed meanwhile, each message once."""
    srv = make_server()
    account = srv.register()
    room = srv.create_room(account)
    person = Person(browser.new_context(), srv.url)
    try:
        person.sign_in(account.username)
        person.goto(f"/rooms/{room}")
        expect(person.page.locator("#status")).to_have_text("live")
        http = srv.client(headers=account.headers)
        assert http.post(f"/api/rooms/{room}/messages", json={"body": "before"}).status_code == 201
        expect(person.page.locator("#messages li .body")).to_have_text(["before"])

        # Drop the page's socket the way a slow consumer is dropped (1013), then post
        # while it is away: it must reconnect with `since` and catch up.
        hub = srv.server.config.app.state.services.hub  # type: ignore[union-attr]
        loop = srv.server.servers[0].get_loop()  # type: ignore[union-attr]

        def drop_all() -> None:
            for connection in list(hub.all()):
                connection.kick(1013, "test drop")

        loop.call_soon_threadsafe(drop_all)
        expect(person.page.locator("#status")).not_to_have_text("live")
        for i in range(5):
            assert (
                http.post(f"/api/rooms/{room}/messages", json={"body": f"m{i}"}).status_code == 201
            )
        expect(person.page.locator("#status")).to_have_text("live", timeout=15_000)
        expect(person.page.locator("#messages li .body")).to_have_text(
            ["before", "m0", "m1", "m2", "m3", "m4"]
        )
    finally:
        person.context.close()
