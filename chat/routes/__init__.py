"""The HTTP API, one module per resource."""

from typing import Any

from chat.schemas import ErrorOut

# Answers an operation can give besides its own, declared so that the OpenAPI document
# lists every status code a client can get.
Responses = dict[int | str, dict[str, Any]]

UNAUTHORIZED: Responses = {401: {"description": "No valid token", "model": ErrorOut}}
# Signed in by the cookie, a request that changes something must carry the CSRF header.
CSRF_REFUSED: Responses = {
    403: {"description": "Cookie sign-in without the CSRF header", "model": ErrorOut}
}
# A body that cannot be read at all (say, not UTF-8) is a 400 from FastAPI, not a 422;
# one over the size limit is a 413 from the app's middleware.
BAD_BODY: Responses = {
    400: {"description": "The body cannot be parsed", "model": ErrorOut},
    413: {"description": "The body is over 1 MiB", "model": ErrorOut},
}
# A write the database could not store (disk full, read-only, unreachable).
STORAGE_FAILED: Responses = {
    503: {"description": "Storage unavailable; see Retry-After", "model": ErrorOut}
}
