"""A browser session's access cookie, renewed by the server before it expires.

The cookie holds a short access token (`CHAT_TOKEN_TTL_MINUTES`) that names its session;
the cookie itself is kept for the session's life. When a request arrives with a token
that has expired or is about to, and its browser session is live, the request goes on
with a fresh token and the response sets it: a page and its API calls never meet an
expired token while the session lives. Sockets need no renewal (`chat.ws`).
"""

import logging
from datetime import UTC, datetime, timedelta

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat import signins
from chat.deps import ACCESS_COOKIE, authenticate_token
from chat.security import InvalidToken, create_access_token, decode_access_token
from chat.services import Services

log = logging.getLogger(__name__)

# A token with less than this left (or half its lifetime, if shorter) is renewed.
RENEW_BEFORE = timedelta(minutes=5)


def set_access_cookie(response: Response, services: Services, token: str) -> None:
    response.set_cookie(
        ACCESS_COOKIE,
        token,
        max_age=int(services.session_life.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=services.settings.cookie_secure,
        path="/",
    )


def browser_token(services: Services, user_id: int, token_key: str, session_id: str) -> str:
    return create_access_token(
        user_id, token_key, services.signing_key, services.token_ttl, session_id
    )


async def renewed(services: Services, token: str) -> str | None:
    """A fresh token for `token`'s browser session if it needs one and may have one."""
    try:
        claims = decode_access_token(token, services.signing_key, verify_exp=False)
    except InvalidToken:
        return None
    left = claims.expires_at - datetime.now(UTC)
    if left > min(RENEW_BEFORE, services.token_ttl / 2):
        return None
    found = await authenticate_token(services, token, renewable=True)
    if found is None or found.session.kind != signins.BROWSER:
        return None
    return browser_token(services, found.user.id, found.user.token_key, claims.session_id)


class CookieRenewal:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = HTTPConnection(scope).cookies.get(ACCESS_COOKIE)
        services: Services = scope["app"].state.services
        fresh = None
        if token:
            try:
                fresh = await renewed(services, token)
            except Exception as exc:
                # Storage is away: the request goes on unrenewed and meets the same trouble.
                log.warning("could not renew an access cookie: %s", exc)
        if fresh is None or token is None:
            await self.app(scope, receive, send)
            return
        old, new = f"{ACCESS_COOKIE}={token}".encode(), f"{ACCESS_COOKIE}={fresh}".encode()
        headers = [
            (name, value.replace(old, new) if name == b"cookie" else value)
            for name, value in scope["headers"]
        ]
        carrier = Response()
        set_access_cookie(carrier, services, fresh)
        set_cookie = carrier.raw_headers[-1]

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(set_cookie)
            await send(message)

        await self.app({**scope, "headers": headers}, receive, send_with_cookie)
