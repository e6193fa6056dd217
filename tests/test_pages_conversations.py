"""The conversation forms of the rooms page, as a browser sends them: a new room's kind and
topic, reserved names, and "New message" (POST /dms) with its refusals."""

import html
import re

import httpx
import pytest

from chat.fields import DM_OTHERS_MAX, RESERVED_ROOM_NAME_RULE, TOPIC_MAX_CHARS, TOPIC_RULE
from tests.conftest import PASSWORD, Account, Server, unique


def signed_in_page(server: Server, account: Account) -> tuple[httpx.Client, str]:
    """A browser-like client signed in through the form, and its CSRF token."""
    client = server.client(follow_redirects=False)
    csrf = client.get("/login").cookies["csrf_token"]
    r = client.post(
        "/login", data={"username": account.username, "password": PASSWORD, "csrf_token": csrf}
    )
    assert r.status_code == 303, r.text
    r = client.get("/rooms")
    assert r.status_code == 200
    token = client.cookies.get("csrf_token")
    assert token
    return client, token


def form_error(page: str, element_id: str = "form-error") -> str:
    found = re.search(rf'id="{element_id}">([^<]*)<', page)
    assert found is not None, page
    return html.unescape(found.group(1))


def test_private_room_with_a_topic_from_the_form(server: Server) -> None:
    """The form makes a private room with its topic, its creator the owner; a topic over
    the limit is refused with the rule the page shows."""
    account = server.register()
    client, csrf = signed_in_page(server, account)
    name = unique("hidden-")
    form = {"name": name, "kind": "private", "topic": "  quiet plans  ", "csrf_token": csrf}
    r = client.post("/rooms", data=form)
    assert r.status_code == 303 and r.headers["location"] == f"/rooms/{name}"
    room = server.client(headers=account.headers).get(f"/api/rooms/{name}").json()
    assert (room["kind"], room["topic"], room["role"]) == ("private", "quiet plans", "owner")
    assert f"Topics are {TOPIC_RULE}." in html.unescape(client.get("/rooms").text)

    form = {"name": unique("long-"), "topic": "x" * (TOPIC_MAX_CHARS + 1), "csrf_token": csrf}
    r = client.post("/rooms", data=form)
    assert r.status_code == 400
    assert form_error(r.text) == f"Topics are {TOPIC_RULE}."


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (
            {"name": "dm-taken"},
            RESERVED_ROOM_NAME_RULE[:1].upper() + RESERVED_ROOM_NAME_RULE[1:] + ".",
        ),
        ({"name": "fine-name", "kind": "dm"}, "A room is either public or private."),
    ],
)
def test_room_form_refusals(server: Server, form: dict[str, str], error: str) -> None:
    """Names kept for direct messages, and kinds other than public and private, are refused
    on the page, which keeps what was typed."""
    client, csrf = signed_in_page(server, server.register())
    r = client.post("/rooms", data={**form, "csrf_token": csrf})
    assert r.status_code == 400
    assert form_error(r.text) == error
    assert f'value="{form["name"]}"' in r.text


def test_new_message_opens_the_same_dm_each_time(server: Server) -> None:
    """ "New message" to one or more people opens their DM, named by the server; asking again,
    in any order or case, opens the same one, and the list names it by the others."""
    me, bob, carol = server.register(), server.register(), server.register()
    client, csrf = signed_in_page(server, me)
    r = client.post(
        "/dms", data={"users": f"@{bob.username}, {carol.username}", "csrf_token": csrf}
    )
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("/rooms/dm-")
    again = f"{carol.username.upper()} {bob.username} {me.username}"
    r = client.post("/dms", data={"users": again, "csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == location
    page = html.unescape(client.get("/rooms").text)
    others = ", ".join(sorted([bob.username, carol.username], key=str.lower))
    assert f'<a href="{location}" class="dm">{others}</a>' in page
    assert client.get(location).status_code == 200


@pytest.mark.parametrize(
    ("users", "status", "error"),
    [
        ("", 400, "Name at least one other person."),
        ("{me}", 400, "Name at least one other person."),
        (
            " ".join(f"p{i}xyz" for i in range(DM_OTHERS_MAX + 1)),
            400,
            f"A direct conversation has at most {DM_OTHERS_MAX} other people.",
        ),
        ("{bob} ghost-of-nobody not/a/name", 404, "No such user: ghost-of-nobody, not/a/name."),
    ],
)
def test_new_message_refusals(server: Server, users: str, status: int, error: str) -> None:
    """What cannot start a DM is said on the page, in the dialog, with what was typed."""
    me, bob = server.register(), server.register()
    client, csrf = signed_in_page(server, me)
    typed = users.format(me=me.username, bob=bob.username)
    r = client.post("/dms", data={"users": typed, "csrf_token": csrf})
    assert r.status_code == status
    assert form_error(r.text, "dm-error") == error
    assert '<dialog id="new-message-dialog" aria-labelledby="new-message-title" open>' in r.text


def test_new_message_needs_the_csrf_token(server: Server) -> None:
    """Without the page's CSRF token, no DM is made."""
    me, bob = server.register(), server.register()
    client, _csrf = signed_in_page(server, me)
    r = client.post("/dms", data={"users": bob.username, "csrf_token": "forged"})
    assert r.status_code == 403
    dms = server.client(headers=me.headers).get("/api/rooms").json()
    assert [room for room in dms if room["kind"] == "dm"] == []


def test_banned_user_gets_the_forbidden_page(server: Server) -> None:
    """Banned from a public room, opening its page gives 403 with the reason; a private room
    they are not in gives the 404 page, as an unknown name does."""
    owner, outsider = server.register(), server.register()
    api = server.client(headers=owner.headers)
    public, private = unique("open-"), unique("closed-")
    assert api.post("/api/rooms", json={"name": public}).status_code == 201
    assert api.post("/api/rooms", json={"name": private, "kind": "private"}).status_code == 201
    assert api.put(f"/api/rooms/{public}/bans/{outsider.username}").status_code == 204
    client, _csrf = signed_in_page(server, outsider)
    r = client.get(f"/rooms/{public}")
    assert r.status_code == 403
    assert form_error(r.text, "forbidden-reason") == "Banned from this room."
    for name in (private, unique("never-")):
        r = client.get(f"/rooms/{name}")
        assert r.status_code == 404 and "No such room" in r.text
