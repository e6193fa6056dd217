"""Membership changes are rate-limited per account: each one is told to a whole room."""

from collections.abc import Callable

import httpx

from tests.conftest import Server


def test_membership_changes_are_limited_per_account(make_server: Callable[..., Server]) -> None:
    """Past `CHAT_MEMBERSHIP_BURST` changes an owner gets 429 with `Retry-After`, and nothing
    changes; another account is not held back; changes refused (403) are not counted."""
    srv = make_server(membership_burst=3, membership_per_min=1)
    owner, other, bob = srv.register(), srv.register(), srv.register()
    room = srv.create_room(owner)
    with httpx.Client(base_url=srv.url, timeout=15) as http:

        def topic(account_headers: dict[str, str], text: str) -> httpx.Response:
            return http.patch(f"/api/rooms/{room}", json={"topic": text}, headers=account_headers)

        # Refused changes (not a moderator) cost the refused account nothing.
        for _ in range(5):
            assert topic(other.headers, "no").status_code == 403
        assert (
            http.put(
                f"/api/rooms/{room}/members/{other.username}", headers=other.headers
            ).status_code
            == 204
        )
        for n in range(2):
            assert topic(owner.headers, f"topic {n}").status_code == 200
        assert (
            http.put(f"/api/rooms/{room}/members/{bob.username}", headers=owner.headers).status_code
            == 204
        )
        refused = topic(owner.headers, "one too many")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        kick = http.delete(f"/api/rooms/{room}/members/{bob.username}", headers=owner.headers)
        assert kick.status_code == 429
        shown = http.get(f"/api/rooms/{room}", headers=owner.headers).json()
        members = http.get(f"/api/rooms/{room}/members", headers=owner.headers).json()
    assert shown["topic"] == "topic 1"
    assert bob.username in {m["username"] for m in members}
