"""Conversations in Chromium: private rooms made and managed from the pages, what a removed
member's open page does, direct messages started from the rooms page, and axe-core's
accessibility rules on the rooms and room pages.

The screenshots land in test-artifacts/ (conversations-*.png); the README shows copies of
them from docs/screenshots/."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat.closecodes import CloseCode
from tests.conftest import Account, Server, unique
from tests.test_browser import ARTIFACTS, Person, chromium

pytest.importorskip("axe_playwright_python", reason="the test extra is not installed")
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Locator, Page, WebSocketRoute, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

# A window in which a page that is meant to stay away would have reconnected: its first
# reconnect comes within half a second.
QUIET_MS = 3_000
# SPEC: a removed user's sockets close "at once"; the page says so within this.
REMOVAL_SHOWN_MS = 2_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_people(browser: Browser, server: Server) -> Iterator[list[Person]]:
    made = [Person(browser.new_context(), server.url) for _ in range(3)]
    yield made
    for person in made:
        person.context.close()


def signed_in(person: Person, server: Server, prefix: str) -> Account:
    account = server.register(unique(prefix))
    person.sign_in(account.username)
    return account


def open_room(person: Person, room: str) -> None:
    person.goto(f"/rooms/{room}")
    expect(person.page.locator("#status")).to_have_text("live")


def member(page: Page, username: str) -> Locator:
    return page.locator(f'#members li[data-user="{username}"]')


def accessible(page: Page, what: str) -> None:
    """axe-core finds no violation on the page as it is now."""
    results = Axe().run(page)
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"conversations-{name}.png"
    page.screenshot(path=str(path))
    return path


def script_errors(person: Person) -> list[str]:
    """What the page's scripts complained of; refused pages (400, 404) are meant here."""
    return [e for e in person.console_errors if not e.startswith("Failed to load resource")]


def api(server: Server, account: Account, method: str, path: str, **kwargs: Any) -> int:
    http = server.client(headers=account.headers)
    return http.request(method, path, **kwargs).status_code


def test_private_room_made_and_managed_from_the_pages(
    server: Server, open_people: list[Person]
) -> None:
    """A private room made from the rooms page is listed to its members only: its owner adds
    someone from the member list, who then finds it in their list; anyone else neither sees it
    listed nor can open it (the 404 page, as for a room that does not exist). The owner's role
    change reaches the member's open page live. Both pages pass axe-core."""
    alice, bob, carol = open_people
    alice_account = signed_in(alice, server, "alice")
    bob_account = signed_in(bob, server, "bob")
    signed_in(carol, server, "carol")
    page = alice.page

    # `dm-` names are kept for direct messages: the page says so and keeps what was typed.
    page.fill("#room-name", "dm-mine")
    page.click("#create-room button[type=submit]")
    expect(page.locator("#form-error")).to_have_text(
        "Names starting with 'dm-' are kept for direct messages."
    )
    expect(page.locator("#room-name")).to_have_value("dm-mine")

    name = unique("plans-")
    topic = "Where we plan the <b>launch</b>"
    page.fill("#room-name", name)
    page.check("#kind-private")
    page.fill("#room-topic", topic)
    page.click("#create-room button[type=submit]")
    page.wait_for_url(f"**/rooms/{name}")
    expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("#room-title")).to_have_text(f"#{name}")
    expect(page.locator("#room-kind")).to_have_text("private room")
    expect(page.locator("#room-topic")).to_have_text(topic)
    # The owner chooses each member's role; her own is "owner".
    expect(member(page, alice_account.username).locator("select")).to_have_value("owner")

    page.fill("#add-username", bob_account.username)
    page.press("#add-username", "Enter")
    bob_item = member(page, bob_account.username)
    expect(bob_item.locator("select")).to_have_value("member")
    expect(page.locator("#member-error")).to_be_hidden()

    bob.goto("/rooms")
    listed = bob.page.locator(f'#rooms li[data-room="{name}"]')
    expect(listed.locator(".kind")).to_have_text("private")
    expect(listed.locator(".topic")).to_have_text(topic)
    accessible(bob.page, "the rooms page")
    screenshot(bob.page, "rooms")

    carol.goto("/rooms")
    expect(carol.page.locator("#rooms li[data-room=general]")).to_have_count(1)
    expect(carol.page.locator(f'#rooms li[data-room="{name}"]')).to_have_count(0)
    response = carol.page.goto(f"{server.url}/rooms/{name}")
    assert response is not None and response.status == 404
    expect(carol.page.locator("h1")).to_have_text("No such room")

    open_room(bob, name)
    expect(bob.page.locator("#add-member")).to_be_hidden()
    expect(member(bob.page, bob_account.username).locator(".role")).to_have_text("member")
    # The owner makes bob a moderator: bob's open page learns it from the socket and now
    # offers him the moderators' controls.
    bob_item.locator("select[data-action=role]").select_option("moderator")
    expect(member(bob.page, bob_account.username).locator(".role")).to_have_text("moderator")
    expect(bob.page.locator("#add-member")).to_be_visible()
    # Moderators act on members only: no kick for the owner.
    expect(member(bob.page, alice_account.username).locator("[data-action=kick]")).to_have_count(0)

    alice.say("welcome, bob")
    said = bob.page.locator("#messages li", has_text="welcome, bob")
    expect(said).to_have_count(1)
    # A message's author offers their card too; Escape closes it, back where one was.
    said.locator("button.who").click()
    expect(bob.page.locator("#person-name")).to_have_text(alice_account.username)
    bob.page.keyboard.press("Escape")
    expect(bob.page.locator("#person")).to_be_hidden()
    expect(said.locator("button.who")).to_be_focused()
    accessible(page, "the room page with its member list")
    screenshot(page, "room")

    # Bob leaves: back to his list, which no longer has the room; alice sees him go.
    bob.page.click("#leave")
    bob.page.wait_for_url("**/rooms")
    expect(bob.page.locator(f'#rooms li[data-room="{name}"]')).to_have_count(0)
    expect(member(page, bob_account.username)).to_have_count(0)

    for person in (alice, bob, carol):
        assert person.dialogs == [], "a script ran from a topic"
        assert script_errors(person) == []


def test_kicked_member_is_told_and_stays_away(server: Server, open_people: list[Person]) -> None:
    """Removed by an owner, a member's open room page says "You were removed from this room"
        at once (4403) and opens no new socket; their page shows them gone from the owner's member
        list too. Banned from a public room, the page says so, and opening the room again gives the
    403 page, until the owner lifts the ban from the page."""
    alice, bob, _ = open_people
    alice_account = signed_in(alice, server, "alice")
    bob_account = signed_in(bob, server, "bob")
    name = unique("team-")
    assert (
        api(server, alice_account, "POST", "/api/rooms", json={"name": name, "kind": "private"})
        == 201
    )
    assert (
        api(server, alice_account, "PUT", f"/api/rooms/{name}/members/{bob_account.username}")
        == 204
    )

    opened: list[str] = []
    # Room sockets only: the rooms page bob comes from has its `/ws/me`.
    bob.page.on("websocket", lambda ws: opened.append(ws.url) if "/ws/rooms/" in ws.url else None)
    open_room(bob, name)
    open_room(alice, name)
    assert len(opened) == 1
    in_sidebar = bob.page.locator(f'#sidebar li[data-room="{name}"]')
    expect(in_sidebar).to_have_count(1)
    bob_item = member(alice.page, bob_account.username)
    bob_item.locator("button[data-action=kick]").click()
    started = time.monotonic()
    notice = bob.page.locator("#notice")
    expect(notice).to_have_text("You were removed from this room.", timeout=REMOVAL_SHOWN_MS)
    assert time.monotonic() - started < REMOVAL_SHOWN_MS / 1000
    expect(bob.page.locator("#body")).to_be_disabled()
    # Nor does his sidebar list the room any more.
    expect(in_sidebar).to_have_count(0)
    expect(bob_item).to_have_count(0)
    with pytest.raises(PlaywrightTimeoutError), bob.page.expect_websocket(timeout=QUIET_MS):
        pass
    assert len(opened) == 1
    screenshot(bob.page, "removed")

    # Banned from a public room (a private one's ex-member is told it does not exist): the
    # page tells why, and the room's page is closed to him.
    lobby = unique("lobby-")
    assert api(server, alice_account, "POST", "/api/rooms", json={"name": lobby}) == 201
    open_room(bob, lobby)
    open_room(alice, lobby)
    member(alice.page, bob_account.username).locator("button[data-action=ban]").click()
    expect(bob.page.locator("#notice")).to_have_text(
        "You are banned from this room.", timeout=REMOVAL_SHOWN_MS
    )
    response = bob.page.goto(f"{server.url}/rooms/{lobby}")
    assert response is not None and response.status == 403
    expect(bob.page.locator("#forbidden-reason")).to_have_text("Banned from this room.")
    # The owner sees the ban, and lifts it: the room is open to him again.
    banned = alice.page.locator(f'#banned li[data-user="{bob_account.username}"]')
    expect(banned).to_have_count(1)
    accessible(alice.page, "the room page with its list of bans")
    banned.locator("button[data-action=unban]").click()
    expect(alice.page.locator("#banned-section")).to_be_hidden()
    open_room(bob, lobby)
    assert script_errors(alice) == []


def test_direct_messages_started_from_the_pages(server: Server, open_people: list[Person]) -> None:
    """The rooms page's "New message" (opened from the keyboard) starts a direct conversation,
    refusing unknown names on the page; each side's list names it by the other person, and
    "Message" on a member's name in a room page reopens the same one."""
    alice, bob, _ = open_people
    alice_account = signed_in(alice, server, "alice")
    bob_account = signed_in(bob, server, "bob")
    page = alice.page

    page.focus("#new-message")
    page.keyboard.press("Enter")
    expect(page.locator("#new-message-dialog")).to_be_visible()
    expect(page.locator("#dm-users")).to_be_focused()
    ghost = unique("nobody")
    page.fill("#dm-users", f"{bob_account.username}, {ghost}")
    page.press("#dm-users", "Enter")
    expect(page.locator("#dm-error")).to_have_text(f"No such user: {ghost}.")
    expect(page.locator("#new-message-dialog")).to_be_visible()
    accessible(page, "the rooms page with the New message dialog")
    screenshot(page, "new-message")

    page.fill("#dm-users", bob_account.username)
    page.press("#dm-users", "Enter")
    page.wait_for_url("**/rooms/dm-*")
    dm = page.url.rsplit("/", 1)[1]
    expect(page.locator("#room-title")).to_have_text(bob_account.username)
    expect(page.locator("#room-kind")).to_have_text("direct message")
    expect(page.locator("#status")).to_have_text("live")
    alice.say("hi bob, just us")
    # A DM has no roles, so no controls.
    expect(member(page, bob_account.username)).to_have_count(1)
    expect(page.locator("#members select, #members [data-action=kick]")).to_have_count(0)
    screenshot(page, "dm")

    for person, other in ((alice, bob_account), (bob, alice_account)):
        person.goto("/rooms")
        link = person.page.locator(f'#dms li[data-room="{dm}"] a')
        expect(link).to_have_text(other.username)
        expect(person.page.locator(f'#rooms li[data-room="{dm}"]')).to_have_count(0)
        if person is bob:
            screenshot(person.page, "direct-messages")

    # Bob opens it from his list and answers; then finds alice's name in a room and asks
    # for "Message": the same conversation, not a second one.
    bob.page.click(f'#dms li[data-room="{dm}"] a')
    expect(bob.page.locator("#messages li", has_text="hi bob, just us")).to_have_count(1)
    open_room(bob, "general")
    open_room(alice, "general")
    expect(member(bob.page, alice_account.username)).to_have_count(1)
    member(bob.page, alice_account.username).locator("button.person").click()
    expect(bob.page.locator("#person-name")).to_have_text(alice_account.username)
    expect(bob.page.locator("#person-message")).to_be_focused()
    bob.page.keyboard.press("Enter")
    bob.page.wait_for_url(f"**/rooms/{dm}")
    expect(bob.page.locator("#room-title")).to_have_text(alice_account.username)
    assert script_errors(alice) == [] and script_errors(bob) == []


def test_no_such_room_said_and_not_retried(server: Server, open_people: list[Person]) -> None:
    """A room socket closed with 4404 (the room is gone, or was never the caller's to know)
    leaves the page saying "This room does not exist", with no new socket."""
    person = open_people[0]
    signed_in(person, server, "lost")
    opened: list[str] = []

    def gone(ws: WebSocketRoute) -> None:
        opened.append(ws.url)
        ws.close(code=CloseCode.NOT_FOUND, reason="unknown room")

    person.page.route_web_socket("**/ws/rooms/**", gone)
    person.goto("/rooms/general")
    expect(person.page.locator("#notice")).to_have_text("This room does not exist.")
    expect(person.page.locator("#body")).to_be_disabled()
    assert len(opened) == 1
    person.page.wait_for_timeout(QUIET_MS)
    assert len(opened) == 1


def test_site_admin_acts_as_owner_but_not_in_dms(server: Server, open_people: list[Person]) -> None:
    """A site admin gets the owner's controls in someone else's room (roles, kick, ban, add),
    and is not shown anyone's DM."""
    assert server.admin is not None
    admin, alice = open_people[0], open_people[1]
    alice_account = signed_in(alice, server, "alice")
    bob_account = server.register(unique("bob"))
    name = unique("club-")
    assert api(server, alice_account, "POST", "/api/rooms", json={"name": name}) == 201
    assert (
        api(server, alice_account, "POST", "/api/dms", json={"users": [bob_account.username]})
        == 201
    )
    admin.sign_in(server.admin.username)
    expect(admin.page.locator(f'#rooms li[data-room="{name}"]')).to_have_count(1)
    expect(admin.page.locator("#dms a")).to_have_count(0)
    open_room(admin, name)
    owner = member(admin.page, alice_account.username)
    expect(owner.locator("select")).to_have_value("owner")
    expect(owner.locator("[data-action=kick]")).to_have_count(1)
    expect(admin.page.locator("#add-member")).to_be_visible()
    # The same for a member of the room: the controls mirror what the server allows.
    open_room(alice, name)
    expect(member(alice.page, alice_account.username).locator("select")).to_have_value("owner")
    expect(member(alice.page, server.admin.username).locator("[data-action=ban]")).to_have_count(1)
