"""User administration: the list, deactivation and the admin role, and what they end."""

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from chat.db import alembic_config, migrate
from chat.settings import Settings
from tests.conftest import (
    PASSWORD,
    Account,
    Server,
    new_postgres_database,
    of_type,
    recv,
    recv_until,
    run_sql,
    unique,
)
from tests.test_cli import run_chat
from tests.ws_helpers import closed_with, send, welcome

DATABASES = ["sqlite", "postgresql"]
# Rounds of two admins demoting each other at once.
ROUNDS = 8


def patch(server: Server, admin: Account, username: str, **changes: bool) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15, headers=admin.headers) as http:
        return http.patch(f"/api/admin/users/{username}", json=changes)


def users(server: Server, admin: Account, **params: Any) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15, headers=admin.headers) as http:
        return http.get("/api/admin/users", params=params)


def sign_in(server: Server, username: str, password: str = PASSWORD) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.post("/api/auth/token", data={"username": username, "password": password})


def shown(server: Server, admin: Account, username: str) -> dict[str, Any]:
    found = users(server, admin, q=username).json()["users"]
    return next(u for u in found if u["username"] == username)


def test_search_pages_and_counts(make_server: Callable[..., Server]) -> None:
    """`q` matches any part of a name in any case, literally (`_` is no wildcard); `limit`
    and `offset` page through the matches in name order and `total` counts them all."""
    srv = make_server()
    assert srv.admin is not None
    tag = secrets.token_hex(3)
    names = [f"Zed_{tag}a", f"zed_{tag}b", f"x.zed_{tag}c", f"zedx{tag}d"]
    for name in names:
        srv.register(name)
    r = users(srv, srv.admin, q=f"ZED_{tag}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3
    assert [u["username"] for u in body["users"]] == sorted(names[:3], key=str.lower)
    user = body["users"][0]
    assert set(user) == {"id", "username", "is_admin", "is_active", "created_at", "last_seen_at"}
    assert user["is_active"] is True and user["is_admin"] is False

    first = users(srv, srv.admin, q=f"zed_{tag}", limit=2).json()
    second = users(srv, srv.admin, q=f"zed_{tag}", limit=2, offset=2).json()
    assert (first["total"], second["total"]) == (3, 3)
    paged = [u["username"] for u in first["users"] + second["users"]]
    assert paged == [u["username"] for u in body["users"]]
    # Everyone, the admin included, without a search.
    assert users(srv, srv.admin).json()["total"] == len(names) + 1

    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"q": "a%"}, {"q": "x" * 33}):
        assert users(srv, srv.admin, **bad).status_code == 422, bad
    assert users(srv, srv.admin, limit=200).status_code == 200


def test_only_admins_administer(server: Server, user: Account) -> None:
    """Without a token 401, as an ordinary user 403, for the list and for changes."""
    assert users(server, user).status_code == 403
    assert patch(server, user, user.username, is_admin=True).status_code == 403
    with httpx.Client(base_url=server.url, timeout=15) as http:
        assert http.get("/api/admin/users").status_code == 401
        r = http.patch(f"/api/admin/users/{user.username}", json={"is_admin": True})
        assert r.status_code == 401
    assert sign_in(server, user.username).status_code == 200


def test_promote_demote_and_unknown_users(server: Server) -> None:
    """PATCH sets the role and answers with the user; an unknown name is 404; a body with
    anything else is 422."""
    assert server.admin is not None
    someone = server.register()
    r = patch(server, server.admin, someone.username.upper(), is_admin=True)
    assert r.status_code == 200, r.text
    assert (r.json()["username"], r.json()["is_admin"]) == (someone.username, True)
    with httpx.Client(base_url=server.url, timeout=15, headers=someone.headers) as http:
        assert http.get("/api/admin/users").status_code == 200
    r = patch(server, server.admin, someone.username, is_admin=False)
    assert r.status_code == 200 and r.json()["is_admin"] is False
    assert patch(server, server.admin, unique("nobody"), is_active=False).status_code == 404
    assert patch(server, server.admin, "no%00body", is_active=False).status_code == 404
    with httpx.Client(base_url=server.url, timeout=15, headers=server.admin.headers) as http:
        r = http.patch(f"/api/admin/users/{someone.username}", json={"is_admin": "yes"})
        assert r.status_code == 422
        r = http.patch(f"/api/admin/users/{someone.username}", json={"username": "x"})
        assert r.status_code == 422


def test_the_last_active_admin_stays(make_server: Callable[..., Server]) -> None:
    """The only active admin can be neither demoted nor deactivated (409, nothing changed);
    with a second active admin both work, and a deactivated admin does not count."""
    srv = make_server()
    first = srv.admin
    assert first is not None
    assert patch(srv, first, first.username, is_admin=False).status_code == 409
    assert patch(srv, first, first.username, is_active=False).status_code == 409
    assert patch(srv, first, first.username, is_admin=True, is_active=False).status_code == 409
    assert shown(srv, first, first.username)["is_admin"] is True

    second = srv.register()
    assert patch(srv, first, second.username, is_admin=True).status_code == 200
    assert patch(srv, first, second.username, is_active=False).status_code == 200
    # The second admin is deactivated: the first is still the last active one.
    assert patch(srv, first, first.username, is_admin=False).status_code == 409
    assert patch(srv, first, second.username, is_active=True).status_code == 200
    second = Account(
        second.id,
        second.username,
        PASSWORD,
        sign_in(srv, second.username).json()["access_token"],
        True,
    )
    r = patch(srv, second, first.username, is_admin=False)
    assert r.status_code == 200 and r.json()["is_admin"] is False
    assert patch(srv, second, second.username, is_admin=False).status_code == 409


def at_once(srv: Server, pair: list[Account], change: dict[str, bool]) -> list[int]:
    """Each of the pair sends `change` about the other at the same moment; their statuses."""
    barrier = threading.Barrier(2)
    answers = [0, 0]

    def act(i: int) -> None:
        me, them = pair[i], pair[1 - i]
        with httpx.Client(base_url=srv.url, timeout=15, headers=me.headers) as http:
            http.get("/healthz")  # Connected before the barrier.
            barrier.wait()
            answers[i] = http.patch(f"/api/admin/users/{them.username}", json=change).status_code

    threads = [threading.Thread(target=act, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


@pytest.mark.parametrize("kind", DATABASES)
def test_admins_demoting_each_other_at_once_leave_one(
    make_server: Callable[..., Server], kind: str
) -> None:
    """Two admins who demote (or deactivate) each other at the same moment: one wins, the
    other gets 409, and an active admin remains, round after round."""
    overrides = {"database_url": new_postgres_database()} if kind == "postgresql" else {}
    srv = make_server(**overrides)
    assert srv.admin is not None
    pair = [srv.register(), srv.register()]
    for account in pair:
        assert patch(srv, srv.admin, account.username, is_admin=True).status_code == 200
    # Only the pair are admins from here on.
    assert patch(srv, pair[0], srv.admin.username, is_admin=False).status_code == 200
    conflicts = 0
    for round_ in range(ROUNDS):
        change = {"is_admin": False} if round_ % 2 else {"is_active": False}
        answers = at_once(srv, pair, change)
        assert answers.count(200) == 1, f"both or neither won: {answers}"
        # The loser's request may find its own token already refused (deactivated: 401)
        # or its role gone (403); or both got past that, and the loser's is 409.
        assert set(answers) - {200} <= {401, 403, 409}, answers
        conflicts += answers.count(409)
        winner, loser = pair[answers.index(200)], pair[1 - answers.index(200)]
        everyone = users(srv, winner, limit=200).json()["users"]
        assert [u["username"] for u in everyone if u["is_admin"] and u["is_active"]] == [
            winner.username
        ]
        r = patch(srv, winner, loser.username, is_admin=True, is_active=True)
        assert r.status_code == 200
        loser.token = sign_in(srv, loser.username).json()["access_token"]
    # Most rounds race both checks: each request was admitted while the other admin stood.
    print(f"{conflicts} of {ROUNDS} rounds raced")
    assert conflicts >= ROUNDS // 3


def test_deactivated_sign_in_gets_the_wrong_password_answer(server: Server) -> None:
    """A deactivated account's right password is answered exactly as a wrong one, by the
    API and by the sign-in page; reactivated, it signs in again."""
    assert server.admin is not None
    account = server.register()
    wrong = sign_in(server, account.username, "not the password")
    assert patch(server, server.admin, account.username, is_active=False).status_code == 200
    refused = sign_in(server, account.username)
    assert (refused.status_code, refused.json()) == (wrong.status_code, wrong.json())
    assert refused.status_code == 401
    assert refused.headers.get("www-authenticate") == wrong.headers.get("www-authenticate")

    def page_sign_in(password: str) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=15) as http:
            csrf = http.get("/login").cookies["csrf_token"]
            return http.post(
                "/login",
                data={"username": account.username, "password": password, "csrf_token": csrf},
            )

    for page in (page_sign_in(PASSWORD), page_sign_in("not the password")):
        assert page.status_code == 401
        assert "Incorrect username or password." in page.text
        assert "access_token" not in page.cookies

    assert patch(server, server.admin, account.username, is_active=True).status_code == 200
    assert sign_in(server, account.username).status_code == 200
    assert page_sign_in(PASSWORD).status_code == 303


def test_deactivation_ends_rest_sockets_and_presence_at_once(server: Server, room: str) -> None:
    """Deactivating closes every socket of the account (room sockets and its admin view)
    with 1008 within a second, takes it out of presence, and its tokens get 401; another
    user's socket stays open (the control)."""
    assert server.admin is not None
    target, bystander = server.register(), server.register()
    assert patch(server, server.admin, target.username, is_admin=True).status_code == 200
    second_token = sign_in(server, target.username).json()["access_token"]
    with (
        server.ws(f"/ws/rooms/{room}", bystander) as theirs,
        server.ws(f"/ws/rooms/{room}", target) as mine,
        server.ws("/ws/rooms/general", token=second_token) as other_room,
        server.ws("/ws/admin", target) as view,
    ):
        seen = welcome(theirs)
        welcome(mine)
        welcome(other_room)
        assert recv(view)["type"] == "stats"
        # The target is there: in the bystander's welcome if it joined first, else announced.
        if target.username not in seen["users"]:
            recv_until(theirs, of_type("presence", event="join", user=target.username))
        assert patch(server, server.admin, target.username, is_active=False).status_code == 200
        started = time.monotonic()
        for ws in (mine, other_room, view):
            assert closed_with(ws, timeout=3).code == 1008
        assert time.monotonic() - started < 1.0
        left = recv_until(theirs, of_type("presence", event="leave", user=target.username), 2)
        assert target.username not in left["users"]
        send(theirs, {"type": "message", "body": "still here"})
        assert recv_until(theirs, of_type("message"))["body"] == "still here"
    with httpx.Client(base_url=server.url, timeout=15) as http:
        for token in (target.token, second_token):
            r = http.get("/api/rooms", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401
        r = http.get("/api/admin/active-users", headers=server.admin.headers)
        assert target.username not in r.json()["rooms"].get(room, [])
    with server.ws(f"/ws/rooms/{room}", target) as again:
        assert closed_with(again).code == 1008


def test_demotion_closes_the_admin_view_at_once(server: Server) -> None:
    """A demoted admin's admin view closes (1008) through the broker's event, not on the
    view's next periodic recheck; their room socket stays (the control)."""
    assert server.admin is not None
    deputy = server.register()
    assert patch(server, server.admin, deputy.username, is_admin=True).status_code == 200
    with server.ws("/ws/admin", deputy) as view, server.ws("/ws/rooms/general", deputy) as chat:
        welcome(chat)
        assert recv(view)["type"] == "stats"
        assert patch(server, server.admin, deputy.username, is_admin=False).status_code == 200
        closed = closed_with(view, timeout=3)
        assert (closed.code, closed.reason) == (1008, "no longer an admin")
        send(chat, {"type": "message", "body": "still a member"})
        assert recv_until(chat, of_type("message"))["body"] == "still a member"


def test_last_seen_at_sign_in_and_sockets_not_per_message(server: Server) -> None:
    """`last_seen_at` is empty until the first sign-in, set by it, moved on when a socket
    opens and when it closes, and not by the messages in between."""
    assert server.admin is not None
    name = unique()
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.post("/api/auth/register", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201
    assert shown(server, server.admin, name)["last_seen_at"] is None
    token = sign_in(server, name).json()["access_token"]
    signed_in = shown(server, server.admin, name)["last_seen_at"]
    assert signed_in is not None

    def moves_on(since: str) -> str:
        deadline = time.monotonic() + 5
        while (seen := shown(server, server.admin, name)["last_seen_at"]) == since:
            assert time.monotonic() < deadline, "last_seen_at did not move on"
            time.sleep(0.1)
        assert seen > since
        return str(seen)

    time.sleep(0.05)
    with server.ws("/ws/rooms/general", token=token) as ws:
        welcome(ws)
        connected = moves_on(signed_in)
        time.sleep(0.05)
        for i in range(3):
            send(ws, {"type": "message", "body": f"m{i}", "nonce": f"n{i}"})
            recv_until(ws, of_type("message", nonce=f"n{i}"))
        time.sleep(1.5)
        assert shown(server, server.admin, name)["last_seen_at"] == connected
    moves_on(connected)


def test_broker_reconnect_recheck_closes_deactivated_and_rekeyed_sockets(
    make_server: Callable[..., Server],
) -> None:
    """An account deactivated, or its key changed, with no event carried (straight in the
    database) keeps its sockets until the broker reconnects; then they close with 1008,
    and another user's socket stays (the control)."""
    srv = make_server()
    deactivated, rekeyed, bystander = srv.register(), srv.register(), srv.register()
    assert srv.admin is not None
    assert patch(srv, srv.admin, deactivated.username, is_admin=True).status_code == 200
    with (
        srv.ws("/ws/rooms/general", deactivated) as a,
        srv.ws("/ws/admin", deactivated) as view,
        srv.ws("/ws/rooms/general", rekeyed) as b,
        srv.ws("/ws/rooms/general", bystander) as c,
    ):
        for ws in (a, b, c):
            welcome(ws)
        assert recv(view)["type"] == "stats"
        run_sql(srv, f"UPDATE users SET is_active = false WHERE id = {deactivated.id}")
        run_sql(srv, f"UPDATE users SET token_key = 'changed' WHERE id = {rekeyed.id}")
        send(a, {"type": "message", "body": "not yet", "nonce": "a1"})
        recv_until(a, of_type("message", nonce="a1"))

        services = srv.server.config.app.state.services  # type: ignore[union-attr]
        loop = srv.server.servers[0].get_loop()  # type: ignore[union-attr]
        loop.call_soon_threadsafe(services._on_reconnect)
        for ws in (a, view, b):
            assert closed_with(ws, timeout=5).code == 1008
        send(c, {"type": "message", "body": "still here", "nonce": "c1"})
        recv_until(c, of_type("message", nonce="c1"))


def test_migration_keeps_every_account_active(tmp_path: Path) -> None:
    """Accounts that exist before the upgrade are active afterwards, and never seen yet."""
    settings = Settings(data_dir=tmp_path, secret_key=secrets.token_urlsafe(48))
    command.upgrade(alembic_config(settings), "0004_autoincrement")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'chat.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO users (username, username_key, password_hash, is_admin,"
                    " token_key) VALUES ('old', 'old', 'x', true, 'k')"
                )
            )
        migrate(settings)
        with engine.begin() as conn:
            row = conn.execute(sa.text("SELECT is_active, last_seen_at FROM users")).one()
        assert tuple(row) == (1, None)
    finally:
        engine.dispose()


def signed_in_browser(server: Server, account: Account) -> httpx.Client:
    """A client holding the cookies of a sign-in through the page."""
    http = server.client()
    csrf = http.get("/login").cookies["csrf_token"]
    r = http.post(
        "/login", data={"username": account.username, "password": PASSWORD, "csrf_token": csrf}
    )
    assert r.status_code == 303, r.text
    return http


def test_users_page_lists_searches_and_changes(make_server: Callable[..., Server]) -> None:
    """The admins' users page lists and searches accounts, and its buttons (CSRF-checked)
    deactivate, reactivate, promote and demote; the last admin's demotion is refused with
    409 on the page; others get 403 and the signed-out the sign-in page."""
    srv = make_server()
    assert srv.admin is not None
    someone = srv.register(unique("pageuser"))
    browser = signed_in_browser(srv, srv.admin)
    page = browser.get("/admin/users", params={"q": someone.username.upper()})
    assert page.status_code == 200
    assert f'data-user="{someone.username}"' in page.text
    assert f'data-user="{srv.admin.username}"' not in page.text
    assert 'href="/admin/users"' in browser.get("/admin").text
    csrf = browser.cookies["csrf_token"]

    def press(username: str, action: str, token: str = csrf) -> httpx.Response:
        return browser.post(
            f"/admin/users/{username}",
            data={"action": action, "csrf_token": token, "q": "pageuser", "offset": "0"},
        )

    assert press(someone.username, "deactivate", "forged").status_code == 403
    assert shown(srv, srv.admin, someone.username)["is_active"] is True
    r = press(someone.username, "deactivate")
    assert r.status_code == 303 and r.headers["location"] == "/admin/users?q=pageuser&offset=0"
    assert shown(srv, srv.admin, someone.username)["is_active"] is False
    assert "deactivated" in browser.get("/admin/users", params={"q": someone.username}).text
    assert press(someone.username, "reactivate").status_code == 303
    assert press(someone.username, "promote").status_code == 303
    promoted = shown(srv, srv.admin, someone.username)
    assert (promoted["is_admin"], promoted["is_active"]) == (True, True)
    assert press(someone.username, "demote").status_code == 303
    refused = press(srv.admin.username, "demote")
    assert refused.status_code == 409
    assert "The last active admin can be neither deactivated nor demoted." in refused.text
    assert press(unique("ghost"), "demote").status_code == 404
    assert press(someone.username, "explode").status_code == 400

    member = signed_in_browser(srv, someone)
    assert member.get("/admin/users").status_code == 403
    r = member.post(
        f"/admin/users/{srv.admin.username}",
        data={"action": "demote", "csrf_token": member.cookies["csrf_token"]},
    )
    assert r.status_code == 403
    r = srv.client().get("/admin/users")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert browser.get("/admin/users", params={"offset": "9" * 50, "q": "%"}).status_code == 200


def test_create_admin_reactivates_a_deactivated_account(make_server: Callable[..., Server]) -> None:
    """`chat create-admin` on a deactivated account makes it an active admin that signs in."""
    srv = make_server()
    assert srv.admin is not None
    account = srv.register()
    assert patch(srv, srv.admin, account.username, is_active=False).status_code == 200
    assert sign_in(srv, account.username).status_code == 401
    env = {"CHAT_SECRET_KEY": srv.settings.secret_key or ""}
    if srv.settings.database_url:
        env["CHAT_DATABASE_URL"] = srv.settings.database_url
    result = run_chat(
        "create-admin",
        account.username,
        data_dir=srv.settings.data_dir,
        CHAT_ADMIN_PASSWORD="another horse battery",
        **env,
    )
    assert result.returncode == 0, result.stderr
    assert sign_in(srv, account.username, "another horse battery").status_code == 200
    assert shown(srv, srv.admin, account.username)["is_admin"] is True
