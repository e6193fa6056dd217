"""The ASGI application: routes, pages, middleware and the lifespan of the services."""

import functools
import gc
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from chat import account_page, error_pages, pages, ws, wsprotocol
from chat.db import PROJECT_DIR
from chat.prometheus import HttpMetrics
from chat.renewal import CookieRenewal
from chat.routes import admin, auth, health, invites, me, metrics, rooms, search
from chat.services import Services
from chat.settings import Settings
from chat.transport import SERVER_SEND_KEY

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
# Behind HTTPS (CHAT_COOKIE_SECURE): browsers use HTTPS only, for a year.
STRICT_TRANSPORT_SECURITY = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    """Adds the CSP and friends to every HTTP response, the API docs included."""

    def __init__(self, app: ASGIApp, https: bool) -> None:
        self.app = app
        self.headers = [
            *SECURITY_HEADERS,
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        ]
        if https:
            self.headers.append(STRICT_TRANSPORT_SECURITY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).extend(self.headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SocketRoutes:
    """Sends each WebSocket straight to its endpoint (`chat.ws.routes`), and anything else
    to `app`. Keeps the server's own `send` in the scope, so that the hub can write
    pre-encoded frames straight to the socket."""

    def __init__(self, app: ASGIApp, routes: list[WebSocketRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND_KEY] = send
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await route.endpoint(WebSocket(scope, receive=receive, send=send))
                    return
        await self.app(scope, receive, send)


class ChatApp(FastAPI):
    """FastAPI, with WebSockets dispatched by `SocketRoutes` ahead of everything else: the
    HTTP middleware, FastAPI's own (telemetry, body limit) and Starlette's error handler
    would each keep a coroutine frame for the whole life of every socket, and a server
    holds tens of thousands of idle ones."""

    socket_routes: SocketRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.socket_routes is not None:
            # As Starlette would: endpoints find the services through the app.
            scope["app"] = self
            await self.socket_routes(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class BodyLimit:
    """Answers 413 to a request body over `max_bytes` (`CHAT_HTTP_MAX_BODY_BYTES`) instead of
    buffering it: `chat.http_limits` refuses it before the app under `chat serve`, this under
    any other ASGI server."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send)


class _BodyTooLarge(HTTPException):
    # An HTTPException, so that FastAPI's body parsing passes it on as a 413 instead of
    # turning it into "400 error parsing the body" (chunked bodies have no Content-Length).
    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


async def _too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"detail":"Request body too large"}'})


class _AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped, so that a lone surrogate (which a
    client's `\\ud800` escape puts into a Python string) is written rather than crashing
    the UTF-8 encoder."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, written so that any input at all can be echoed back in it."""
    errors = jsonable_encoder(exc.errors())
    for error in errors:
        try:
            json.dumps(error.get("input"), allow_nan=False)
        except ValueError:
            # NaN or Infinity: Python's JSON parser takes them, but they are no JSON.
            del error["input"]
    return _AsciiJSONResponse({"detail": errors}, status_code=422)


def _server_error(https: bool) -> Callable[[Request, Exception], Coroutine[Any, Any, Response]]:
    """The 500 page: Starlette answers it from outside every middleware, SecurityHeaders
    included, so its headers are added here."""
    headers = SecurityHeaders(cast(ASGIApp, None), https).headers

    async def answer(request: Request, exc: Exception) -> Response:
        response = await error_pages.server_error(request, exc)
        for name, value in headers:
            response.headers[name.decode()] = value.decode()
        return response

    return answer


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    services = Services.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await services.start()
        # What start-up made (modules, routes, models: over 100,000 objects) lives as
        # long as the process. Out of the collector's sight, a full collection no
        # longer stops the event loop for tens of milliseconds to walk them.
        gc.collect()
        gc.freeze()
        try:
            yield wsprotocol.limits_state(settings)
        finally:
            gc.unfreeze()
            await services.stop()

    app = ChatApp(
        title="chat",
        summary="Authenticated multi-room chat: REST API. Live chat is at /ws/rooms/{name}.",
        version="1",
        lifespan=lifespan,
        # /docs is a page of our own (chat.pages), with Swagger UI from our static files.
        docs_url=None,
        redoc_url=None,
        exception_handlers={
            RequestValidationError: _validation_error,
            DBAPIError: error_pages.storage_error,
            HTTPException: error_pages.http_error,
            Exception: _server_error(settings.cookie_secure),
        },
    )
    app.state.services = services
    app.add_middleware(SecurityHeaders, https=settings.cookie_secure)
    app.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes)
    app.add_middleware(CookieRenewal)
    app.add_middleware(HttpMetrics, metrics=services.metrics)
    # A socket no route takes goes through the app as any request (to its 403).
    app.socket_routes = SocketRoutes(functools.partial(FastAPI.__call__, app), ws.routes)
    for router in (
        auth.router,
        me.router,
        rooms.router,
        rooms.dms,
        admin.router,
        invites.router,
        search.router,
        health.router,
        metrics.router,
    ):
        app.include_router(router)
    app.include_router(pages.router)
    app.include_router(account_page.router)
    app.mount("/static", StaticFiles(directory=PROJECT_DIR / "static"), name="static")
    return app
