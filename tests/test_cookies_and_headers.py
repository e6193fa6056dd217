"""The CSRF cookie, HSTS behind HTTPS, and an API docs page under the same CSP as the rest."""

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from chat.app import CONTENT_SECURITY_POLICY
from tests.conftest import Server, unique
from tests.test_security import browser, set_cookie_headers, sign_in


def cookie_attributes(r: httpx.Response, name: str) -> list[str]:
    (cookie,) = set_cookie_headers(r, name)
    return [part.strip().lower() for part in cookie.split(";")]


def test_csrf_cookie_is_secure_behind_https(make_server: Callable[..., Server]) -> None:
    """With CHAT_COOKIE_SECURE the csrf_token cookie carries Secure, when a form first sets
    it and when sign-in renews it; without the setting it does not (control)."""
    srv = make_server(cookie_secure=True)
    http = srv.client(follow_redirects=False)
    r = http.get("/login")
    assert "secure" in cookie_attributes(r, "csrf_token")
    account = srv.register()
    # Over plain HTTP the client keeps a Secure cookie to itself: send it by hand.
    csrf = r.cookies["csrf_token"]
    form = {"username": account.username, "password": account.password, "csrf_token": csrf}
    r = httpx.post(
        f"{srv.url}/login", data=form, headers={"Cookie": f"csrf_token={csrf}"}, timeout=15
    )
    assert r.status_code == 303
    assert "secure" in cookie_attributes(r, "csrf_token")
    plain = make_server()
    r = plain.client().get("/login")
    assert "secure" not in cookie_attributes(r, "csrf_token")


def test_csrf_token_is_renewed_at_sign_in(server: Server) -> None:
    """Signing in, by the login or the register form, sets a new csrf_token: the one known
    before sign-in no longer passes a form, the new one does."""
    account = server.register()
    client, before = browser(server)
    r = sign_in(client, before, account)
    assert r.status_code == 303
    after = client.cookies["csrf_token"]
    assert after != before
    form = {"name": unique("room-")}
    client.cookies.set("csrf_token", after)
    assert client.post("/rooms", data={**form, "csrf_token": before}).status_code == 403
    assert client.post("/rooms", data={**form, "csrf_token": after}).status_code == 303

    client, before = browser(server)
    r = client.post(
        "/register",
        data={"username": unique(), "password": account.password, "csrf_token": before},
    )
    assert r.status_code == 303
    assert client.cookies["csrf_token"] != before


def test_sign_out_drops_the_csrf_cookie(server: Server) -> None:
    """The sign-out form clears csrf_token with the session cookie."""
    account = server.register()
    client, csrf = browser(server)
    assert sign_in(client, csrf, account).status_code == 303
    r = client.post("/logout", data={"csrf_token": client.cookies["csrf_token"]})
    assert r.status_code == 303
    assert "max-age=0" in cookie_attributes(r, "csrf_token")


def test_hsts_only_behind_https(make_server: Callable[..., Server]) -> None:
    """With CHAT_COOKIE_SECURE every response, pages, API and docs, carries
    Strict-Transport-Security; without it none does."""
    secure, plain = make_server(cookie_secure=True), make_server()
    for path in ("/login", "/healthz", "/api/rooms", "/docs"):
        r = secure.client(follow_redirects=False).get(path)
        assert r.headers.get("strict-transport-security") == "max-age=31536000", path
        r = plain.client(follow_redirects=False).get(path)
        assert "strict-transport-security" not in r.headers, path


def test_docs_page_has_the_strict_csp_and_only_own_assets(server: Server) -> None:
    """/docs carries the pages' CSP and X-Frame-Options, runs no inline script, and loads
    Swagger UI's script and styles from this server; /redoc is gone."""
    http = server.client()
    r = http.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-frame-options"] == "DENY"
    assert re.findall(r"<script>|<script [^>]*>[^<]", r.text) == []
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    assert "/static/vendor/swagger-ui/swagger-ui.css" in assets
    for asset in assets:
        assert not urlsplit(asset).netloc, asset
        assert http.get(asset).status_code == 200, asset
    assert 'data-openapi-url="/openapi.json"' in r.text
    assert http.get("/redoc").status_code == 404


def test_docs_render_in_chromium_under_the_csp(server: Server) -> None:
    """Swagger UI, from this server's files, renders the API under the strict CSP: the
    operations are listed and the browser reports no refused script, style or request."""
    from tests.test_browser import TIMEOUT_MS, chromium

    with chromium() as launched:
        page = launched.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=TIMEOUT_MS)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert any("/api/rooms" in path for path in paths), paths
        assert page.locator(".info .title").inner_text().startswith("chat")
        page.close()
    assert problems == []
