"""The browser client's app shell and message view in Chromium: messages grouped by author
with day separators and local dates, safe Markdown with XSS payloads in every field a user
fills, scrolling back to the start of a room, the "New" line at the read marker, the "N new
messages" jump, the sidebar's live badges and tab title across two tabs, the keyboard's next
unread room, and the drawer on a phone.

The room page's screenshot (light, 1280x800) lands in docs/screenshots/client-room.png."""

import gzip
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Account, Server, run_sql, unique
from tests.test_browser import XSS, Person, chromium

pytest.importorskip("playwright", reason="the test extra is not installed")
from playwright.sync_api import Browser, Page, expect

pytest.importorskip("axe_playwright_python", reason="the test extra is not installed")
from axe_playwright_python.sync_playwright import Axe

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
# What the room page (its HTML, scripts and style sheet) may weigh, uncompressed.
PAGE_WEIGHT_BUDGET = 120_000
SCRIPT_PAYLOAD = "<script>window.__pwned = 1</script>"


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


def api(server: Server, account: Account, method: str, path: str, **kwargs: Any) -> Any:
    return server.client(headers=account.headers).request(method, path, **kwargs)


def signed_in(person: Person, server: Server, prefix: str) -> Account:
    account = server.register(unique(prefix))
    person.sign_in(account.username)
    return account


def room_with(server: Server, owner: Account, *members: Account, **fields: Any) -> str:
    name = fields.pop("name", None) or unique("room-")
    r = api(server, owner, "POST", "/api/rooms", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    for account in members:
        r = api(server, account, "PUT", f"/api/rooms/{name}/members/{account.username}")
        assert r.status_code == 204, r.text
    return name


def insert_messages(server: Server, room: str, rows: list[tuple[Account, str, datetime]]) -> None:
    """Messages stored behind the server's back with the times given (a room nobody posted
    in yet): ids 1, 2, 3... in the order given."""
    postgres = bool(server.settings.database_url)
    values = []
    for seq, (author, body, ts) in enumerate(rows, start=1):
        when = ts.astimezone(UTC)
        stamp = when.isoformat() if postgres else when.strftime("%Y-%m-%d %H:%M:%S.%f")
        text = body.replace("'", "''")
        values.append(
            f"((SELECT id FROM rooms WHERE name = '{room}'), {seq}, "
            f"(SELECT id FROM users WHERE username = '{author.username}'), '{text}', '{stamp}')"
        )
    run_sql(
        server,
        "INSERT INTO messages (room_id, seq, user_id, body, ts) VALUES " + ", ".join(values),
    )
    run_sql(server, f"UPDATE rooms SET last_seq = {len(rows)} WHERE name = '{room}'")


def open_room(page: Page, base_url: str, room: str) -> None:
    page.goto(f"{base_url}/rooms/{room}")
    expect(page.locator("#status")).to_have_text("live")


def accessible(page: Page, what: str) -> None:
    """axe-core finds no violation on the page as it is now."""
    results = Axe().run(page)
    assert results.violations_count == 0, f"{what}:\n{results.generate_report()}"


def message(page: Page, seq: int) -> Any:
    return page.locator(f"#msg-{seq}")


MARKDOWN = (
    "**Release** is *Thursday*: run `make dist` first.\n"
    "> the changelog is in **docs/**\n"
    "```\npython3 run.py test\n```\n"
    "Notes: [the plan](https://example.com/plan), https://example.org/x. or "
    "mailto:someone@example.com"
)
PAYLOADS = (
    "`code <b>not bold</b>` [bad](javascript:alert(1)) [data](data:text/html,hi)\n"
    "```\nblock <i>as is</i> **not bold**\n```\n"
    f'{XSS} {SCRIPT_PAYLOAD} [x](https://e.com/" onmouseover="alert(1)) '
    '<a href="javascript:alert(2)">a</a>'
)


def test_grouping_days_markdown_and_xss(server: Server, two: tuple[Person, Person]) -> None:
    """Messages by one author within minutes share one name; another author, or ten minutes
    later, starts a new group; each day gets one separator, and every time carries its full
    date in its title. Markdown becomes bold, italic, code, code blocks, quotes and links that
    open safely (http(s) and mailto only); payloads in the body stay text: no element
    injected, no script run, no dialog. The room holds all its history, so
    the start-of-room marker shows. The page's weight stays within its budget."""
    bob = two[1]
    alice_account = server.register(unique("alice"))
    bob_account = signed_in(bob, server, "bob")
    room = room_with(server, alice_account, bob_account, topic="Planning the spring release")
    today = datetime.now().astimezone().replace(hour=12, minute=0, second=0, microsecond=0)
    two_days_ago, yesterday = today - timedelta(days=2), today - timedelta(days=1)
    insert_messages(
        server,
        room,
        [
            (alice_account, "Morning! Shall we pick a date?", two_days_ago),
            (alice_account, "Thursday works for me.", two_days_ago + timedelta(minutes=1)),
            (bob_account, "Thursday it is.", two_days_ago + timedelta(minutes=2)),
            (bob_account, "I'll write the notes.", two_days_ago + timedelta(minutes=12)),
            (bob_account, "Notes are up, see the wiki.", yesterday),
            (alice_account, MARKDOWN, today - timedelta(minutes=2)),
            (alice_account, PAYLOADS, today - timedelta(minutes=1)),
        ],
    )
    page = bob.page
    page.set_viewport_size({"width": 1280, "height": 800})
    loaded: set[str] = set()
    page.on(
        "response",
        lambda r: (
            loaded.add(r.url)
            if r.request.resource_type in ("document", "script", "stylesheet")
            else None
        ),
    )
    open_room(page, server.url, room)

    days = page.locator("#messages li.day")
    expect(days).to_have_count(3)
    # Each separator stands right above the first message of its day.
    for seq in (1, 5, 6):
        expect(page.locator(f"#messages li.day + li#msg-{seq}")).to_have_count(1)
    continued = [
        message(page, seq).evaluate("li => li.classList.contains('continued')")
        for seq in range(1, 6)
    ]
    assert continued == [False, True, False, False, False]
    # A continued message's name is there for screen readers only (and shows when focused).
    hidden_name = message(page, 2).locator(".who").bounding_box()
    assert hidden_name is not None and hidden_name["width"] <= 1, hidden_name
    expect(message(page, 1).locator(".who")).to_be_visible()
    title = message(page, 1).locator("time").get_attribute("title") or ""
    assert str(two_days_ago.year) in title and str(two_days_ago.day) in title, title
    expect(page.locator("#messages li.start")).to_have_text(f"This is the start of #{room}.")
    expect(page.locator("#messages li.start + li.day + li#msg-1")).to_have_count(1)

    body = message(page, 6).locator(".body")
    expect(body.locator("strong").first).to_have_text("Release")
    expect(body.locator("em")).to_have_text("Thursday")
    expect(body.locator("code").first).to_have_text("make dist")
    expect(body.locator("blockquote")).to_have_text("the changelog is in docs/")
    expect(body.locator("blockquote strong")).to_have_text("docs/")
    expect(body.locator("pre code")).to_have_text("python3 run.py test")
    payloads = message(page, 7).locator(".body")
    expect(payloads.locator("code").first).to_have_text("code <b>not bold</b>")
    expect(payloads.locator("pre code")).to_have_text("block <i>as is</i> **not bold**")
    links = page.locator("#messages .body a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs == [
        "https://example.com/plan",
        "https://example.org/x",
        "mailto:someone@example.com",
        "https://e.com/",
    ], hrefs
    for i in range(links.count()):
        expect(links.nth(i)).to_have_attribute("rel", "noopener noreferrer")
        expect(links.nth(i)).to_have_attribute("target", "_blank")
    # What may not be a link, or is HTML, stays as typed.
    for typed in ("[bad](javascript:alert(1))", "[data](data:text/html,hi)", XSS, SCRIPT_PAYLOAD):
        expect(payloads).to_contain_text(typed)
    expect(
        page.locator("main img, main script, #sidebar img, #messages b, #messages i")
    ).to_have_count(0)
    assert page.evaluate("window.__pwned") is None
    assert bob.dialogs == []

    accessible(page, "the room page with Markdown, groups and day separators")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The conversation, not the payloads, in the picture: the list as scrolled up to message 6.
    page.locator("#messages").evaluate(
        "list => { const li = document.getElementById('msg-6');"
        " list.scrollTop = li.offsetTop + li.offsetHeight - list.clientHeight; }"
    )
    page.screenshot(path=str(SCREENSHOTS / "client-room.png"))

    # The page's weight: what it loaded of its own, as sent uncompressed and gzipped.
    own = {url: page.request.get(url).body() for url in loaded if url.startswith(server.url)}
    assert any(url.endswith("/static/room.js") for url in own), sorted(own)
    total = sum(len(body) for body in own.values())
    zipped = sum(len(gzip.compress(body)) for body in own.values())
    print(f"room page weight: {total} bytes, {zipped} bytes gzipped, {len(own)} files")
    assert total <= PAGE_WEIGHT_BUDGET, {url: len(body) for url, body in own.items()}


def test_unread_line_scrolling_back_and_new_messages_jump(
    server: Server, two: tuple[Person, Person]
) -> None:
    """Entering a room read up to message 100 of 130 focuses the composer and shows the
    "New" line right above message 101. Scrolling to the top loads older pages, keeping in
    sight what was, until the start-of-room marker. Scrolled up, two new messages show the
    "2 new messages" jump without moving the list; the jump brings them into sight."""
    bob = two[1]
    alice_account = server.register(unique("alice"))
    bob_account = signed_in(bob, server, "bob")
    room = room_with(server, alice_account, bob_account)
    start = datetime.now(UTC) - timedelta(hours=3)
    insert_messages(
        server,
        room,
        [(alice_account, f"old message {i}", start + timedelta(minutes=i)) for i in range(1, 131)],
    )
    r = api(server, bob_account, "PUT", f"/api/rooms/{room}/read", json={"up_to": 100})
    assert r.status_code == 204, r.text
    page = bob.page
    open_room(page, server.url, room)
    expect(page.locator("#body")).to_be_focused()
    line = page.locator("#messages li.unread-line")
    expect(line).to_have_text("New")
    expect(page.locator("#messages li.unread-line + li#msg-101")).to_have_count(1)
    expect(line).to_be_in_viewport()
    expect(page.locator("#messages li.start")).to_have_count(0)

    # Scrolling up: each page comes in above, and what was at the top stays where it was.
    messages = page.locator("#messages")
    while page.locator("#messages li.start").count() == 0:
        first = page.locator("#messages li[data-id]").first
        first_id = first.get_attribute("data-id")
        messages.evaluate("list => { list.scrollTop = 0; }")
        expect(page.locator("#messages li[data-id]").first).not_to_have_attribute(
            "data-id", first_id or "", timeout=5000
        )
        expect(page.locator(f"#msg-{first_id}")).to_be_in_viewport()
    expect(page.locator("#messages li[data-id]")).to_have_count(130)
    expect(page.locator("#messages li.start + li.day + li#msg-1")).to_have_count(1)
    expect(page.locator("#jump")).to_be_hidden()

    # Scrolled up (at the start), two messages come: the jump says so, the list stays.
    messages.evaluate("list => { list.scrollTop = 0; }")
    expect(page.locator("#msg-1")).to_be_in_viewport()
    for text in ("live one", "live two"):
        r = api(server, alice_account, "POST", f"/api/rooms/{room}/messages", json={"body": text})
        assert r.status_code == 201, r.text
    jump = page.locator("#jump")
    expect(jump).to_have_text("2 new messages ↓")
    expect(page.locator("#messages li[data-id]", has_text="live two")).to_have_count(1)
    expect(page.locator("#messages li[data-id]", has_text="live two")).not_to_be_in_viewport()
    expect(page.locator("#msg-1")).to_be_in_viewport()
    jump.click()
    expect(page.locator("#messages li[data-id]", has_text="live two")).to_be_in_viewport()
    expect(jump).to_be_hidden()
    assert [e for e in bob.console_errors if not e.startswith("Failed to load resource")] == []


def test_sidebar_badges_title_next_unread_and_drawer(
    server: Server, two: tuple[Person, Person]
) -> None:
    """Bob's two tabs (a room, and his account page) both carry the sidebar: his rooms with
    the current one marked, badges and the tab title's count live from `/ws/me` as alice
    posts and mentions him, a DM alice opens appears in it. Alt+ArrowDown goes to the next
    unread room; reading it there clears its badge in the other tab. The sidebar's search
    opens a result in its room, at the message. A topic holding HTML stays text. On a phone
    the sidebar is a drawer behind a button that says whether it is open (Escape or a tap
    beside it closes it); the page never scrolls sideways."""
    bob = two[1]
    alice_account = server.register(unique("alice"))
    bob_account = signed_in(bob, server, "bob")
    base = unique("side-")
    topic = f"{XSS} {SCRIPT_PAYLOAD}"
    first, second, third = (
        room_with(server, alice_account, bob_account, name=f"{base}-{i}", topic=topic)
        for i in (1, 2, 3)
    )
    room_tab = bob.page
    open_room(room_tab, server.url, first)
    # A topic holding HTML is text in the room's head.
    expect(room_tab.locator("#room-topic")).to_have_text(topic)
    expect(room_tab.locator("img, main script")).to_have_count(0)
    assert room_tab.evaluate("window.__pwned") is None
    expect(room_tab.locator("#side-rooms a[aria-current=page]")).to_have_text(f"#{first}")
    account_tab = bob.context.new_page()
    account_tab.goto(f"{server.url}/account")
    for tab in (room_tab, account_tab):
        expect(tab.locator(f'#side-rooms li[data-room="{third}"]')).to_have_count(1)
        expect(tab.locator("#side-rooms .badge.unread:visible")).to_have_count(0)
    expect(account_tab).to_have_title("Account · chat")

    word = unique("zebra")
    mention = f"hi @{bob_account.username} {word}"
    for room, text in ((third, "hello"), (third, mention), (second, "yo")):
        r = api(server, alice_account, "POST", f"/api/rooms/{room}/messages", json={"body": text})
        assert r.status_code == 201, r.text

    def badge(tab: Page, room: str, kind: str) -> Any:
        return tab.locator(f'#sidebar li[data-room="{room}"] .badge.{kind}')

    for tab in (room_tab, account_tab):
        expect(badge(tab, third, "unread")).to_have_text("2 unread")
        expect(badge(tab, third, "mention-count")).to_have_text("@1 mentioning you")
        expect(badge(tab, second, "unread")).to_have_text("1 unread")
        expect(badge(tab, second, "mention-count")).to_be_hidden()
    expect(account_tab).to_have_title("(3) Account · chat")
    accessible(account_tab, "the account page in the shell, with badges")
    expect(room_tab).to_have_title(re.compile(r"^\(3\) #"))

    # A DM alice opens shows up, named by her, as it is made.
    r = api(server, alice_account, "POST", "/api/dms", json={"users": [bob_account.username]})
    assert r.status_code == 201, r.text
    expect(account_tab.locator("#side-dms li a")).to_have_text(alice_account.username)

    # The next unread room from the first is the second; reading it clears it everywhere.
    room_tab.locator("#body").press("Alt+ArrowDown")
    room_tab.wait_for_url(f"**/rooms/{second}")
    expect(room_tab.locator("#status")).to_have_text("live")
    expect(badge(account_tab, second, "unread")).to_be_hidden()
    expect(account_tab).to_have_title("(2) Account · chat")
    # The room on the screen counts as read in its own sidebar and title.
    expect(badge(room_tab, second, "unread")).to_be_hidden()
    expect(room_tab).to_have_title(re.compile(rf"^\(2\) #{second} "))
    # And on from there, round to the third.
    room_tab.locator("#body").press("Alt+ArrowDown")
    room_tab.wait_for_url(f"**/rooms/{third}")
    expect(account_tab).to_have_title("Account · chat")

    # The sidebar's search, from the account page: a result opens its message in its room.
    account_tab.fill("#search-q", word)
    account_tab.press("#search-q", "Enter")
    expect(account_tab.locator("#search-status")).to_have_text("1 message found.")
    result = account_tab.locator("#search-results li a")
    expect(result).to_have_text(mention)
    expect(account_tab.locator("#search-results .result-room")).to_have_text(f"#{third}")
    result.click()
    account_tab.wait_for_url(f"**/rooms/{third}#msg-2")
    expect(account_tab.locator("#msg-2")).to_have_class(re.compile(r"(^|\s)target(\s|$)"))

    # A phone: the drawer is closed, opens from its button, Escape closes it.
    phone = bob.context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    open_room(phone, server.url, first)
    toggle = phone.locator("#drawer-toggle")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(phone.locator("#sidebar")).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(phone.locator(f'#sidebar a[href="/rooms/{second}"]')).to_be_visible()
    accessible(phone, "a phone's room page with the drawer open")
    phone.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_be_focused()
    expect(phone.locator("#sidebar")).to_be_hidden()
    # A tap beside the open drawer closes it too.
    toggle.click()
    expect(phone.locator("#sidebar")).to_be_visible()
    phone.mouse.click(370, 600)
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(phone.locator("#sidebar")).to_be_hidden()
    wide = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    offenders = phone.evaluate(
        "[...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > innerWidth + 1)"
        ".map(e => `${e.tagName}#${e.id}.${e.className}`)"
    )
    assert wide <= 0, f"the phone's page scrolls sideways by {wide}px: {offenders}"
    # Desktop: no drawer button, the sidebar is there.
    expect(room_tab.locator("#drawer-toggle")).to_be_hidden()
    expect(room_tab.locator("#sidebar")).to_be_visible()
