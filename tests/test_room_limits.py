"""Rooms cannot be created without bound, and the room list comes in pages."""

import re
from collections.abc import Callable

import httpx

from chat.rooms import ROOMS_DEFAULT_LIMIT, ROOMS_MAX_LIMIT
from tests.conftest import Account, Server, unique
from tests.test_security import browser, sign_in


def create(server: Server, account: Account, name: str | None = None) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.post(
            "/api/rooms", json={"name": name or unique("room-")}, headers=account.headers
        )


def next_link(r: httpx.Response) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', r.headers.get("link", ""))
    return match.group(1) if match else None


def test_room_quota_per_account(make_server: Callable[..., Server]) -> None:
    """An account may create CHAT_ROOMS_PER_USER rooms; the next gets 403 saying so, on the
    API and the page. Other accounts, and admins, are not held to that account's count."""
    srv = make_server(rooms_per_user=3, room_create_burst=100)
    assert srv.admin is not None
    account, other = srv.register(), srv.register()
    for _ in range(3):
        assert create(srv, account).status_code == 201
    r = create(srv, account)
    assert r.status_code == 403
    assert r.json()["detail"] == "room limit reached: an account may create at most 3 rooms"
    client, csrf = browser(srv)
    assert sign_in(client, csrf, account).status_code == 303
    csrf = client.cookies["csrf_token"]  # Renewed at sign-in.
    r = client.post("/rooms", data={"name": unique("room-"), "csrf_token": csrf})
    assert r.status_code == 403
    assert "at most 3 rooms" in r.text
    assert create(srv, other).status_code == 201
    for _ in range(4):
        assert create(srv, srv.admin).status_code == 201


def test_room_creation_rate(make_server: Callable[..., Server]) -> None:
    """Past CHAT_ROOM_CREATE_BURST rooms in a row, creating one more gets 429 with a
    Retry-After of about an hour at one room per hour; another account, and admins, are
    unaffected."""
    srv = make_server(room_create_burst=2, room_create_per_hour=1)
    assert srv.admin is not None
    account, other = srv.register(), srv.register()
    assert create(srv, account).status_code == 201
    assert create(srv, account).status_code == 201
    r = create(srv, account)
    assert r.status_code == 429
    assert 3000 <= int(r.headers["retry-after"]) <= 3600
    assert create(srv, other).status_code == 201
    for _ in range(3):
        assert create(srv, srv.admin).status_code == 201


def test_room_list_pages(make_server: Callable[..., Server]) -> None:
    """GET /api/rooms gives ROOMS_DEFAULT_LIMIT rooms in name order with a Link to the next
    page; following the links with any `limit` lists every room once; a limit over
    ROOMS_MAX_LIMIT is refused; the /rooms page pages the same way."""
    srv = make_server(room_create_burst=1000)
    assert srv.admin is not None
    names = {"general"} | {create_named(srv, srv.admin, n) for n in range(ROOMS_DEFAULT_LIMIT + 5)}
    http = srv.client(headers=srv.admin.headers)

    r = http.get("/api/rooms")
    assert r.status_code == 200
    first = [room["name"] for room in r.json()]
    assert first == sorted(names)[:ROOMS_DEFAULT_LIMIT]
    assert next_link(r) == f"/api/rooms?limit={ROOMS_DEFAULT_LIMIT}&after={first[-1]}"

    seen: list[str] = []
    url: str | None = "/api/rooms?limit=7"
    while url is not None:
        r = http.get(url)
        assert r.status_code == 200
        seen += [room["name"] for room in r.json()]
        url = next_link(r)
    assert seen == sorted(names)
    assert http.get("/api/rooms", params={"limit": ROOMS_MAX_LIMIT + 1}).status_code == 422

    client, csrf = browser(srv)
    assert sign_in(client, csrf, srv.admin).status_code == 303
    # The rooms listed in the page itself, not its sidebar's.
    page = client.get("/rooms").text.split("<main>", 1)[1]
    shown = re.findall(r'<a href="/rooms/([a-z0-9-]+)">', page)
    assert shown == sorted(names)[:ROOMS_DEFAULT_LIMIT]
    more = re.search(r'<a href="(/rooms\?after=[a-z0-9-]+)" id="more-rooms">', page)
    assert more is not None
    rest = client.get(more.group(1)).text.split("<main>", 1)[1]
    assert (
        re.findall(r'<a href="/rooms/([a-z0-9-]+)">', rest) == sorted(names)[ROOMS_DEFAULT_LIMIT:]
    )
    assert 'id="more-rooms"' not in rest


def create_named(server: Server, account: Account, n: int) -> str:
    name = f"page-{n:04d}"
    assert create(server, account, name).status_code == 201
    return name
