"""The sign-in throttle counts failures per account and address, so guesses from elsewhere never
refuse the right password; it believes X-Forwarded-For only from trusted proxies; and with
Redis, every node counts the same failures."""

from collections.abc import Callable

import httpx

from tests.conftest import PASSWORD, Server, unique
from tests.test_cluster import Cluster, make_cluster  # noqa: F401  (the fixture)

ATTACKER = "203.0.113.7"


def sign_in(url: str, username: str, password: str, address: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    form = {"username": username, "password": password}
    return httpx.post(f"{url}/api/auth/token", data=form, headers=headers, timeout=30)


def test_guesses_from_elsewhere_never_lock_out_the_right_password(
    make_server: Callable[..., Server],
) -> None:
    """An address guessing the admin's password is locked out with growing waits; the admin,
    from another address, still signs in with the right password."""
    srv = make_server(login_failures_burst=5, login_failures_per_min=6)
    admin = srv.admin
    assert admin is not None
    codes = [sign_in(srv.url, admin.username, "wrong", ATTACKER).status_code for _ in range(8)]
    assert codes == [401] * 5 + [429] * 3
    refused = sign_in(srv.url, admin.username, PASSWORD, ATTACKER)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 5
    assert sign_in(srv.url, admin.username, PASSWORD, "198.51.100.20").status_code == 200
    assert sign_in(srv.url, admin.username, PASSWORD).status_code == 200


def test_address_is_limited_across_accounts(make_server: Callable[..., Server]) -> None:
    """Guessing one password per account still meets the per-address limit."""
    srv = make_server(login_address_failures_burst=4, login_address_failures_per_min=1)
    names = [unique("nobody") for _ in range(6)]
    codes = [sign_in(srv.url, name, "wrong guess", ATTACKER).status_code for name in names]
    assert codes == [401] * 4 + [429] * 2
    admin = srv.admin
    assert admin is not None
    assert sign_in(srv.url, admin.username, PASSWORD).status_code == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_server: Callable[..., Server],
) -> None:
    """With the proxy elsewhere, a client naming a new address per guess is still one address."""
    srv = make_server(
        forwarded_allow_ips="192.0.2.1",
        login_address_failures_burst=3,
        login_address_failures_per_min=1,
    )
    codes = [
        sign_in(srv.url, unique("nobody"), "wrong guess", f"198.51.100.{i}").status_code
        for i in range(1, 7)
    ]
    assert codes == [401] * 3 + [429] * 3


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    make_server: Callable[..., Server],
) -> None:
    """The control of the test above: from the trusted proxy each named client counts apart."""
    srv = make_server(login_address_failures_burst=3, login_address_failures_per_min=1)
    codes = [
        sign_in(srv.url, unique("nobody"), "wrong guess", f"198.51.100.{i}").status_code
        for i in range(1, 7)
    ]
    assert codes == [401] * 6


def test_failures_on_one_node_count_on_the_other(
    make_cluster: Callable[..., Cluster],  # noqa: F811  (the imported fixture)
) -> None:
    """With Redis the counters are shared: failures on node 1 lock the account out on node 2."""
    cluster = make_cluster(CHAT_LOGIN_FAILURES_BURST="3", CHAT_LOGIN_FAILURES_PER_MIN="1")
    first, second = cluster.nodes
    victim = cluster.register(first)
    for _ in range(3):
        assert sign_in(first.url, victim.username, "wrong guess").status_code == 401
    refused = sign_in(second.url, victim.username, PASSWORD)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 30
    # Control: the other node answers sign-ins of other accounts.
    assert cluster.admin is not None
    assert sign_in(second.url, cluster.admin.username, PASSWORD).status_code == 200
