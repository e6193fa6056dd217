"""Errors as people see them: a styled page for every HTML error (an unknown page, a method
a page does not take, a crash), while the API, and any client that asks for JSON, keeps
getting JSON."""

from collections.abc import Mapping

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from chat import storage
from chat.pages import error_page

# The paths that answer JSON whatever the client accepts.
JSON_PREFIXES = ("/api/", "/ws/")
JSON_PATHS = frozenset({"/openapi.json", "/healthz", "/metrics"})

# What each status means to a person; a status not listed gets its reason phrase only.
EXPLANATIONS = {
    400: ("Bad request", "The page could not make sense of that request."),
    403: ("Not allowed", "You are not allowed to see this page."),
    404: (
        "Page not found",
        "There is no page at this address. It may have moved, or the link may be mistyped.",
    ),
    405: ("Not here", "This page cannot be used that way. Open it from a link instead."),
    408: ("Too slow", "The request took too long to arrive. Try again."),
    413: ("Too large", "That was more than the server takes at once."),
    429: ("Slow down", "Too many requests in a short while. Wait a moment and try again."),
    500: (
        "Something went wrong",
        "The server failed to answer this page. Try again in a "
        "moment; if it keeps happening, tell the admins.",
    ),
    503: (
        "Unavailable for a moment",
        "The server cannot answer right now. Try again in a few seconds.",
    ),
}


def wants_json(request: Request) -> bool:
    path = request.url.path
    if path.startswith(JSON_PREFIXES) or path in JSON_PATHS:
        return True
    accept = request.headers.get("accept", "")
    # A script that asks for JSON only gets JSON; browsers ask for text/html.
    return "application/json" in accept and "text/html" not in accept


async def _page(request: Request, status_code: int, headers: Mapping[str, str] | None) -> Response:
    heading, text = EXPLANATIONS.get(status_code, ("Error", "That did not work."))
    response = await error_page(request, status_code, heading, text)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if wants_json(request):
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    return await _page(request, exc.status_code, exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    """An error nothing else handled (Starlette logs it and re-raises it after this)."""
    if wants_json(request):
        return JSONResponse({"detail": "Internal Server Error"}, 500)
    return await _page(request, 500, None)


async def storage_error(request: Request, exc: Exception) -> Response:
    """The database away (503 + Retry-After), as JSON or as a page."""
    assert isinstance(exc, DBAPIError)
    answer = await storage.storage_unavailable(request, exc)
    if wants_json(request):
        return answer
    return await _page(request, answer.status_code, {"Retry-After": answer.headers["retry-after"]})
