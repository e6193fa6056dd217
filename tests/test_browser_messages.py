"""Messages that change and attention in Chromium: a message's menu (edit in place, delete
with confirmation, react), "(edited)" and tombstones seen live by the other side, mentions
highlighted, unread badges across two tabs of one user, a link that opens a room at a message
with the messages around it, search from the rooms page, and axe-core's rules with the menu open.

The screenshots land in test-artifacts/ (messages-*.png); the README shows copies of them
from docs/screenshots/."""

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Account, Server, unique
from tests.test_browser import ARTIFACTS, XSS, Person, chromium

pytest.importorskip("axe_playwright_python", reason="the test extra is not installed")
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Locator, Page, WebSocketRoute, expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def two(browser: Browser, server: Server) -> Iterator[tuple[Person, Person]]:
    made = (Person(browser.new_context(), server.url), Person(browser.new_context(), server.url))
    yield made
    for person in made:
        person.context.close()


def signed_in(person: Person, server: Server, prefix: str) -> Account:
    account = server.register(unique(prefix))
    person.sign_in(account.username)
    return account


def open_room(page: Page, room: str) -> None:
    page.goto(f"{page.url.split('/rooms')[0]}/rooms/{room}")
    expect(page.locator("#status")).to_have_text("live")


def accessible(page: Page, what: str) -> None:
    """axe-core finds no violation on the page as it is now."""
    results = Axe().run(page)
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"messages-{name}.png"
    page.screenshot(path=str(path))
    return path


def api(server: Server, account: Account, method: str, path: str, **kwargs: Any) -> Any:
    http = server.client(headers=account.headers)
    return http.request(method, path, **kwargs)


def a_room(server: Server, owner: Account, *members: Account) -> str:
    name = server.create_room(owner)
    for account in members:
        path = f"/api/rooms/{name}/members/{account.username}"
        assert api(server, account, "PUT", path).status_code == 204
    return name


def message(page: Page, text: str) -> Locator:
    return page.locator("#messages li[data-id]", has_text=text)


def by_id(page: Page, text: str) -> Locator:
    """The message now holding this text, found again by its id whatever it holds later."""
    found = message(page, text)
    expect(found).to_have_count(1)
    return page.locator(f"#msg-{found.get_attribute('data-id')}")


def has_class(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){name}(\s|$)")


def script_errors(person: Person) -> list[str]:
    return [e for e in person.console_errors if not e.startswith("Failed to load resource")]


def test_edit_and_delete_seen_live(server: Server, two: tuple[Person, Person]) -> None:
    """Edit, from the message's menu and the keyboard alone: the text becomes a box, Enter
    saves, Escape gives up; the other side's page shows the new text and "(edited)" at once
    (`update`). Delete asks first, then both pages show the tombstone "message deleted". Only
    one's own messages offer Edit and Delete to a member; the room's owner may delete (not
    edit) others'. The page with the menu open passes axe-core."""
    alice, bob = two
    alice_account = signed_in(alice, server, "alice")
    bob_account = signed_in(bob, server, "bob")
    room = a_room(server, alice_account, bob_account)
    open_room(alice.page, room)
    open_room(bob.page, room)

    alice.say("the first draft")
    mine = by_id(alice.page, "the first draft")
    theirs = by_id(bob.page, "the first draft")

    # Keyboard only: to the menu button, open it, Edit is the first choice.
    mine.locator(".menu-button").focus()
    alice.page.keyboard.press("Enter")
    expect(mine.locator(".menu-button")).to_have_attribute("aria-expanded", "true")
    expect(mine.locator(".message-menu button[data-action=edit]")).to_be_focused()
    accessible(alice.page, "the room page with a message's menu open")
    screenshot(alice.page, "menu")
    alice.page.keyboard.press("Enter")
    box = mine.locator("textarea.edit-box")
    expect(box).to_be_focused()
    expect(box).to_have_value("the first draft")
    # Escape gives up: the text is as it was, and nobody saw a change.
    box.fill("never sent")
    alice.page.keyboard.press("Escape")
    expect(mine.locator(".body")).to_have_text("the first draft")
    expect(mine.locator(".menu-button")).to_be_focused()

    alice.page.keyboard.press("Enter")
    alice.page.keyboard.press("Enter")
    box.fill("the final text")
    alice.page.keyboard.press("Enter")
    expect(theirs.locator(".body")).to_have_text("the final text")
    expect(theirs.locator(".edited")).to_have_text("(edited)")
    expect(mine.locator(".edited")).to_have_text("(edited)")
    expect(alice.page.locator("#messages textarea")).to_have_count(0)
    screenshot(bob.page, "edited")

    # Bob is a member: his menu on alice's message offers reactions only.
    theirs.locator(".menu-button").click()
    expect(theirs.locator(".message-menu button[data-action=react]")).to_have_count(6)
    expect(
        theirs.locator(".message-menu [data-action=edit], .message-menu [data-action=delete]")
    ).to_have_count(0)
    bob.page.keyboard.press("Escape")
    expect(theirs.locator(".message-menu")).to_have_count(0)

    # Delete asks first; Cancel keeps the message.
    mine.locator(".menu-button").click()
    mine.locator(".message-menu button[data-action=delete]").click()
    dialog = alice.page.locator("#confirm-delete")
    expect(dialog).to_be_visible()
    expect(alice.page.locator("#confirm-delete-text")).to_have_text("the final text")
    accessible(alice.page, "the room page asking before a delete")
    alice.page.click("#confirm-delete-cancel")
    expect(dialog).to_be_hidden()
    expect(theirs.locator(".body")).to_have_text("the final text")
    mine.locator(".menu-button").click()
    mine.locator(".message-menu button[data-action=delete]").click()
    alice.page.click("#confirm-delete-ok")
    for gone in (mine, theirs):
        expect(gone).to_have_class(has_class("deleted"))
        expect(gone.locator(".body")).to_have_text("message deleted")
        expect(gone.locator(".menu-button")).to_have_count(0)
    expect(message(bob.page, "the final text")).to_have_count(0)
    screenshot(bob.page, "deleted")

    # Alice owns the room: she may delete bob's message (not edit it), and does.
    bob.say("a message of bob's")
    on_bobs_page = by_id(bob.page, "a message of bob's")
    his = by_id(alice.page, "a message of bob's")
    his.locator(".menu-button").click()
    expect(his.locator(".message-menu [data-action=edit]")).to_have_count(0)
    his.locator(".message-menu button[data-action=delete]").click()
    alice.page.click("#confirm-delete-ok")
    expect(on_bobs_page.locator(".body")).to_have_text("message deleted")
    expect(message(bob.page, "a message of bob's")).to_have_count(0)
    for person in (alice, bob):
        assert person.dialogs == []
        assert script_errors(person) == []


def test_edit_offered_only_within_the_window(make_server: Any, browser: Browser) -> None:
    """Past `CHAT_EDIT_WINDOW_MINUTES` (here 0) the menu offers no Edit, only Delete (the
    control). A page whose clock runs an hour behind the server's still offers it; the
    edit the server then refuses is not shown as made: the page says why, and the message
    keeps its text."""
    srv = make_server(edit_window_minutes=0)
    person = Person(browser.new_context(), srv.url)
    try:
        person.page.clock.install(time=time.time() - 3600)
        account = signed_in(person, srv, "late")
        room = a_room(srv, account)
        open_room(person.page, room)
        person.say("too late to change")
        mine = by_id(person.page, "too late to change")
        mine.locator(".menu-button").click()
        mine.locator(".message-menu button[data-action=edit]").click()
        mine.locator("textarea.edit-box").fill("changed")
        person.page.keyboard.press("Enter")
        expect(person.page.locator("#error")).to_be_visible()
        expect(person.page.locator("#error")).not_to_be_empty()
        person.page.keyboard.press("Escape")
        expect(mine.locator(".body")).to_have_text("too late to change")
        expect(mine.locator(".edited")).to_have_count(0)
        # The page's clock right: the window is past, and the menu knows it.
        person.page.clock.set_system_time(time.time())
        mine.locator(".menu-button").click()
        menu = mine.locator(".message-menu")
        expect(menu.locator("button[data-action=delete]")).to_have_count(1)
        expect(menu.locator("button[data-action=edit]")).to_have_count(0)
    finally:
        person.context.close()


def test_reactions_toggle_live(server: Server, two: tuple[Person, Person]) -> None:
    """A reaction chosen from the menu reaches the other side as a chip with its count and,
    in its title, who reacted; one's own is shown pressed; clicking the chip takes it back,
    on both pages."""
    alice, bob = two
    alice_account = signed_in(alice, server, "alice")
    bob_account = signed_in(bob, server, "bob")
    room = a_room(server, alice_account, bob_account)
    open_room(alice.page, room)
    open_room(bob.page, room)
    alice.say("launch is on friday")
    theirs = message(bob.page, "launch is on friday")
    mine = message(alice.page, "launch is on friday")
    theirs.locator(".menu-button").click()
    theirs.locator('.message-menu button[data-emoji="🎉"]').click()

    chip = mine.locator('button.reaction[data-emoji="🎉"]')
    expect(chip).to_have_text("🎉 1")
    expect(chip).to_have_attribute("title", bob_account.username)
    expect(chip).to_have_attribute("aria-pressed", "false")
    bob_chip = theirs.locator('button.reaction[data-emoji="🎉"]')
    expect(bob_chip).to_have_attribute("aria-pressed", "true")
    # Alice adds hers with the chip: two, both named.
    chip.click()
    expect(bob_chip).to_have_text("🎉 2")
    names = sorted([alice_account.username, bob_account.username])
    expect(bob_chip).to_have_attribute("title", ", ".join(names))
    screenshot(alice.page, "reactions")
    # Bob takes his back, from the keyboard.
    bob.page.keyboard.press("Escape")
    bob_chip.focus()
    bob.page.keyboard.press("Enter")
    expect(chip).to_have_text("🎉 1")
    expect(chip).to_have_attribute("aria-pressed", "true")
    expect(bob_chip).to_have_attribute("aria-pressed", "false")

    # The room as bob sees it with a little of everything, for the README: a mention of him,
    # an edited message, a deleted one, and the menu open on his own.
    base = f"/api/rooms/{room}/messages"
    said = {"body": f"@{bob_account.username} can you bring the slides?"}
    assert api(server, alice_account, "POST", base, json=said).status_code == 201
    typo = api(server, alice_account, "POST", base, json={"body": "see you at 10"}).json()
    fixed = {"body": "see you at 11"}
    assert (
        api(server, alice_account, "PATCH", f"{base}/{typo['id']}", json=fixed).status_code == 200
    )
    oops = api(server, alice_account, "POST", base, json={"body": "wrong room"}).json()
    assert api(server, alice_account, "DELETE", f"{base}/{oops['id']}").status_code == 204
    bob.say("yes, I will")
    expect(bob.page.locator(f"#msg-{oops['id']} .body")).to_have_text("message deleted")
    expect(bob.page.locator(f"#msg-{typo['id']} .edited")).to_have_text("(edited)")
    answer = by_id(bob.page, "yes, I will")
    answer.locator(".menu-button").click()
    expect(answer.locator(".message-menu button[data-action=edit]")).to_be_focused()
    screenshot(bob.page, "room")
    for person in (alice, bob):
        assert script_errors(person) == []


def badge(page: Page, room: str, kind: str) -> Locator:
    """The badge in the rooms page's own lists (the sidebar has its own: test_browser_client)."""
    return page.locator(f':is(#rooms, #dms) li[data-room="{room}"] .badge.{kind}')


def test_unread_badges_across_two_tabs(server: Server, two: tuple[Person, Person]) -> None:
    """Bob's rooms page (his second tab) shows an unread badge, a mention badge and the total in
    the tab title when alice posts in a room of his, live from `/ws/me`; the mention is marked
    in the room. Opening the room in his first tab marks it read, and the badge in the second
    tab goes (a `read` frame)."""
    alice, bob = two
    alice_account = signed_in(alice, server, "alice")
    bob_account = signed_in(bob, server, "bob")
    room = a_room(server, alice_account, bob_account)
    rooms_tab = bob.context.new_page()
    tab_errors: list[str] = []
    rooms_tab.on("console", lambda m: tab_errors.append(m.text) if m.type == "error" else None)
    rooms_tab.goto(f"{server.url}/rooms")
    expect(rooms_tab.locator(f'#rooms li[data-room="{room}"]')).to_have_count(1)
    expect(badge(rooms_tab, room, "unread")).to_be_hidden()
    expect(rooms_tab).to_have_title("Rooms · chat")

    open_room(alice.page, room)
    alice.say("anyone there?")
    alice.say(f"@{bob_account.username} have a look, and @nobody-at-all too")
    expect(badge(rooms_tab, room, "unread")).to_have_text("2 unread")
    expect(badge(rooms_tab, room, "mention-count")).to_have_text("@1 mentioning you")
    expect(rooms_tab).to_have_title("(2) Rooms · chat")
    accessible(rooms_tab, "the rooms page with badges")
    screenshot(rooms_tab, "unread")

    bob.page.bring_to_front()
    open_room(bob.page, room)
    expect(badge(rooms_tab, room, "unread")).to_be_hidden()
    expect(badge(rooms_tab, room, "mention-count")).to_be_hidden()
    expect(rooms_tab).to_have_title("Rooms · chat")
    view = api(server, bob_account, "GET", f"/api/rooms/{room}").json()
    assert (view["unread"], view["mentions"]) == (0, 0)

    # The mention: marked in bob's page, his own name apart; an unknown name is plain text.
    mentioned = message(bob.page, "have a look")
    expect(mentioned).to_have_class(has_class("mentions-me"))
    expect(mentioned.locator(".mention.me")).to_have_text(f"@{bob_account.username}")
    expect(mentioned.locator(".mention")).to_have_count(1)
    expect(message(bob.page, "anyone there?")).not_to_have_class(has_class("mentions-me"))
    on_alice = message(alice.page, "have a look")
    expect(on_alice.locator(".mention")).to_have_text(f"@{bob_account.username}")
    expect(on_alice.locator(".mention.me")).to_have_count(0)
    screenshot(bob.page, "mention")

    # Rooms opened to bob while his rooms page is open join its lists (a `room` frame): a
    # private room he is added to, and a DM, named by its other member; their badges are live.
    secret = unique("secret-")
    made = {"name": secret, "kind": "private"}
    assert api(server, alice_account, "POST", "/api/rooms", json=made).status_code == 201
    path = f"/api/rooms/{secret}/members/{bob_account.username}"
    assert api(server, alice_account, "PUT", path).status_code == 204
    listed = rooms_tab.locator(f'#rooms li[data-room="{secret}"]')
    expect(listed.locator(".kind")).to_have_text("private")
    dm = api(server, alice_account, "POST", "/api/dms", json={"users": [bob_account.username]})
    assert dm.status_code == 201
    dm_name = dm.json()["name"]
    expect(rooms_tab.locator(f'#dms li[data-room="{dm_name}"] a')).to_have_text(
        alice_account.username
    )
    said = {"body": "just between us"}
    assert (
        api(server, alice_account, "POST", f"/api/rooms/{dm_name}/messages", json=said).status_code
        == 201
    )
    expect(badge(rooms_tab, dm_name, "unread")).to_have_text("1 unread")
    expect(rooms_tab).to_have_title("(1) Rooms · chat")
    for person in (alice, bob):
        assert script_errors(person) == []
    assert tab_errors == []


def test_link_opens_the_room_at_a_message(server: Server, two: tuple[Person, Person]) -> None:
    """A link to `/rooms/{name}#msg-{id}` (what a search result is) opens the room with the
    messages around that one, far older than the newest 50, and shows it highlighted and in
    sight; the newest still come below it, with nothing left out between."""
    person = two[0]
    writers = [server.register(unique("w")) for _ in range(8)]
    room = a_room(server, writers[0], *writers[1:])
    ids: list[int] = []
    for i in range(150):
        writer = writers[i % len(writers)]
        body = {"body": f"line {i:03d}"}
        response = api(server, writer, "POST", f"/api/rooms/{room}/messages", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    signed_in(person, server, "reader")
    wanted = ids[20]
    person.goto(f"/rooms/{room}#msg-{wanted}")
    expect(person.page.locator("#status")).to_have_text("live")
    target = person.page.locator(f"#msg-{wanted}")
    expect(target).to_have_class(has_class("target"))
    expect(target.locator(".body")).to_have_text("line 020")
    expect(target).to_be_in_viewport()
    expect(message(person.page, "line 000")).to_have_count(1)
    expect(message(person.page, "line 045")).to_have_count(1)
    expect(message(person.page, "line 149")).to_have_count(1)
    # Nothing left between: every message from the first shown to the newest, in order.
    shown = person.page.locator("#messages li[data-id] .body").all_text_contents()
    assert shown == [f"line {i:03d}" for i in range(150)]
    assert script_errors(person) == []


def test_changes_made_while_away_shown_on_resume(
    server: Server, two: tuple[Person, Person]
) -> None:
    """Changes made while a page's socket is away (an edit, a delete, a reaction) are shown once
    it is back: the welcome of its resumption (`?since=`) carries them as `updates`."""
    person = two[0]
    account = signed_in(person, server, "away")
    writer = server.register(unique("writer"))
    room = a_room(server, writer, account)
    posted = {}
    for text in ("to edit", "to delete", "to react to"):
        response = api(server, writer, "POST", f"/api/rooms/{room}/messages", json={"body": text})
        assert response.status_code == 201
        posted[text] = response.json()["id"]

    blocked = False
    routes: list[WebSocketRoute] = []
    resumed: list[str] = []

    def gate(ws: WebSocketRoute) -> None:
        if blocked:
            ws.close(code=1013, reason="test: away")
            return
        resumed.append(ws.url)
        routes.append(ws)
        ws.connect_to_server()

    person.page.route_web_socket(f"**/ws/rooms/{room}*", gate)
    open_room(person.page, room)
    expect(message(person.page, "to react to")).to_have_count(1)

    blocked = True
    routes[-1].close(code=1013, reason="test: away")
    expect(person.page.locator("#status")).not_to_have_text("live")
    base = f"/api/rooms/{room}/messages"
    edit = {"body": "edited while away"}
    assert api(server, writer, "PATCH", f"{base}/{posted['to edit']}", json=edit).status_code == 200
    assert api(server, writer, "DELETE", f"{base}/{posted['to delete']}").status_code == 204
    react = f"{base}/{posted['to react to']}/reactions/%F0%9F%91%8D"
    assert api(server, writer, "PUT", react).status_code == 204
    # Away, the page shows none of it.
    expect(message(person.page, "to edit")).to_have_count(1)
    expect(person.page.locator("#messages .reaction")).to_have_count(0)

    blocked = False
    expect(person.page.locator("#status")).to_have_text("live", timeout=15_000)
    assert f"since={posted['to react to']}" in resumed[-1]
    edited = person.page.locator(f"#msg-{posted['to edit']}")
    expect(edited.locator(".body")).to_have_text("edited while away")
    expect(edited.locator(".edited")).to_have_text("(edited)")
    deleted = person.page.locator(f"#msg-{posted['to delete']}")
    expect(deleted.locator(".body")).to_have_text("message deleted")
    reacted = person.page.locator(f"#msg-{posted['to react to']}")
    expect(reacted.locator(".reaction")).to_have_text("👍 1")
    # Each message once.
    expect(person.page.locator("#messages li[data-id]")).to_have_count(3)


def test_search_results_open_the_message(server: Server, two: tuple[Person, Person]) -> None:
    """The rooms page's search box lists `GET /api/search`'s results as text, with room, author
    and time, from the rooms the caller may read only (not a private room of others), without
    deleted messages; a result opens its room at the message, highlighted, with those around
    it."""
    bob, carol = two
    alice_account = server.register(unique("alice"))
    bob_account = signed_in(bob, server, "bob")
    signed_in(carol, server, "carol")
    secret = unique("secret-")
    assert (
        api(
            server, alice_account, "POST", "/api/rooms", json={"name": secret, "kind": "private"}
        ).status_code
        == 201
    )
    # Writers enough to post the room's messages within the rate limit's burst.
    writers = [alice_account, bob_account, server.register(), server.register()]
    for writer in writers[1:]:
        path = f"/api/rooms/{secret}/members/{writer.username}"
        assert api(server, alice_account, "PUT", path).status_code == 204
    word = unique("quarterly")
    base = f"/api/rooms/{secret}/messages"
    ids = []
    for i in range(56):
        writer = alice_account if i == 10 else writers[i % len(writers)]
        body = {"body": f"the {word} numbers {XSS}" if i == 10 else f"filler {i}"}
        response = api(server, writer, "POST", base, json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    gone = api(server, alice_account, "POST", base, json={"body": f"{word} draft to drop"}).json()
    assert api(server, alice_account, "DELETE", f"{base}/{gone['id']}").status_code == 204

    page = bob.page
    page.fill("#search-q", word[:-2])  # a prefix of the last word matches
    page.press("#search-q", "Enter")
    expect(page.locator("#search-status")).to_have_text("1 message found.")
    result = page.locator("#search-results li")
    expect(result.locator(".result-body")).to_have_text(f"the {word} numbers {XSS}")
    expect(result.locator(".result-room")).to_have_text(f"#{secret}")
    expect(result.locator(".result-user")).to_have_text(alice_account.username)
    expect(result.locator("a")).to_have_attribute("href", f"/rooms/{secret}#msg-{ids[10]}")
    accessible(page, "the rooms page with search results")
    screenshot(page, "search")

    # Carol may not read the room: she finds nothing, as for a word never written.
    carol.page.fill("#search-q", word)
    carol.page.press("#search-q", "Enter")
    expect(carol.page.locator("#search-status")).to_have_text("No messages found.")
    expect(carol.page.locator("#search-results")).to_be_hidden()

    result.locator("a").click()
    page.wait_for_url(f"**/rooms/{secret}#msg-{ids[10]}")
    expect(page.locator("#status")).to_have_text("live")
    target = page.locator(f"#msg-{ids[10]}")
    expect(target).to_have_class(has_class("target"))
    expect(target).to_be_in_viewport()
    expect(message(page, "filler 0")).to_have_count(1)
    expect(message(page, "filler 55")).to_have_count(1)
    for person in (bob, carol):
        assert person.dialogs == []
        assert script_errors(person) == []


# A headless browser shows no notification: the page's calls to the Notification API are
# recorded instead, and whether the page is hidden is the test's to say.
RECORD_NOTIFICATIONS = """
window.__notes = [];
window.__hidden = false;
class RecordedNotification {
  // Granted once, for the site, as a browser keeps it.
  static get permission() {
    return localStorage.getItem("test.granted") ? "granted" : "default";
  }
  static requestPermission() {
    localStorage.setItem("test.granted", "1");
    return Promise.resolve("granted");
  }
  constructor(title, options) {
    window.__notes.push({ title, body: options.body, tag: options.tag });
  }
}
window.Notification = RecordedNotification;
Object.defineProperty(Document.prototype, "hidden", { get() { return window.__hidden; } });
"""


def test_opted_in_notifications_for_mentions_and_dms_while_hidden(
    browser: Browser, server: Server
) -> None:
    """Opted in on the rooms page, bob is notified while the page is hidden of a new mention
    and of a new message in a DM (named by the other person); not of a plain message in a
    room, and not of anything while the page is in sight (the controls)."""
    alice = Person(browser.new_context(), server.url)
    bob = Person(browser.new_context(), server.url)
    bob.context.add_init_script(RECORD_NOTIFICATIONS)
    try:
        a, b = signed_in(alice, server, "alice"), signed_in(bob, server, "bob")
        room = a_room(server, a, b)
        dm = api(server, a, "POST", "/api/dms", json={"users": [b.username]}).json()["name"]
        page = bob.page
        bob.goto("/rooms")
        page.check("#notify")
        expect(page.locator("#notify")).to_be_checked()
        entry = page.locator(f'#rooms li[data-room="{room}"]')

        def post(where: str, body: str) -> None:
            r = api(server, a, "POST", f"/api/rooms/{where}/messages", json={"body": body})
            assert r.status_code == 201, r.text

        def notes(count: int | None = None) -> list[dict[str, str]]:
            """What was notified; with `count`, once that many were (in 5 s at most)."""
            deadline = time.monotonic() + 5
            while True:
                found: list[dict[str, str]] = page.evaluate("window.__notes")
                if count is None or len(found) >= count or time.monotonic() > deadline:
                    return found
                time.sleep(0.05)

        post(room, f"@{b.username} while you look")
        expect(entry.locator(".badge.mention-count .n")).to_have_text("1")
        page.evaluate("window.__hidden = true")
        post(room, "nothing for bob")
        expect(entry.locator(".badge.unread .n")).to_have_text("2")
        assert notes() == []
        post(room, f"hidden now, @{b.username}")
        expect(entry.locator(".badge.mention-count .n")).to_have_text("2")
        first = notes(1)
        assert len(first) == 1 and first[0]["tag"] == room, first
        assert "mentioning you" in first[0]["body"]
        post(dm, "just between us")
        both = notes(2)
        assert len(both) == 2 and both[1]["tag"] == dm and a.username in both[1]["title"], both
        # The choice stays with this browser.
        page.reload()
        expect(page.locator("#notify")).to_be_checked()
    finally:
        alice.context.close()
        bob.context.close()
