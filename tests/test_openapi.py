"""Schemathesis against the live server's own OpenAPI document: whatever a client sends, the
REST API never answers with a server error, and every answer, status and body, is one the
document declares.

Schemathesis's pytest integration (`schemathesis.pytest.from_fixture`) does not run under the
pytest used here (it sets `Node._nodeid`, which pytest 9 no longer has), so the tests drive its
Python API: each operation's Hypothesis strategy, `@given`, and `case.call_and_validate`.
"""

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import PASSWORD, Account, Server, make_settings, unique

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# Per operation, way of signing in and generation mode: enough to reach every branch the
# document describes, few enough that the module runs in well under a minute.
MAX_EXAMPLES = 25
ROOM = "fuzz-room"
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
# Signing out revokes the token it is called with.
LOGOUT = "/api/auth/logout"

Operation = Any  # schemathesis.APIOperation, whose type parameters do not matter here
Headers = dict[str, str] | None


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: the fuzzer creates users and rooms at random, and its
    failed sign-ins must throttle neither itself nor anybody else."""
    srv = Server(
        make_settings(
            tmp_path_factory.mktemp("openapi"),
            rate_burst=10**6,
            rate_per_sec=10**6,
            login_failures_burst=10**6,
            login_address_failures_burst=10**6,
        )
    )
    srv.start()
    try:
        srv.admin = srv.register(unique("admin"))
        srv.create_room(srv.admin, ROOM)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def fresh_user(api_server: Server) -> Account:
    user = api_server.register(unique("fuzz"))
    assert not user.is_admin
    return user


@pytest.fixture(scope="module")
def api_schema(api_server: Server) -> Any:
    # Loaded from the live URL, as any client of the API would.
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


def operations(api_schema: Any) -> list[Operation]:
    found = [result.ok() for result in api_schema.get_all_operations()]
    labels = {operation.label for operation in found}
    assert {
        "POST /api/auth/register",
        "POST /api/auth/token",
        "GET /api/rooms",
        "POST /api/rooms",
        "GET /api/rooms/{name}/messages",
        "POST /api/rooms/{name}/messages",
        "GET /api/admin/active-users",
        "GET /healthz",
    } <= labels, labels
    return found


def has_inputs(operation: Operation) -> bool:
    """Whether a request to `operation` has anything to get wrong (the token aside)."""
    return bool(operation.body) or any(
        len(params) for params in (operation.path_parameters, operation.query, operation.headers)
    )


def without_authorization(case: schemathesis.Case) -> None:
    """Drop whatever the generator made up for the security scheme."""
    for name in [n for n in case.headers or {} if n.lower() == "authorization"]:
        del case.headers[name]


def fuzz(
    operation: Operation,
    mode: GenerationMode,
    headers: Headers,
    path_parameters: dict[str, str] | None = None,
) -> None:
    """Up to MAX_EXAMPLES generated requests to `operation`; each answer passes CHECKS."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )
    def run(case: schemathesis.Case) -> None:
        if headers is None:
            without_authorization(case)
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=15)

    run()


def fuzz_each(
    selected: list[Operation],
    mode: GenerationMode,
    headers_for: Callable[[Operation], Headers],
    path_parameters: dict[str, str] | None = None,
) -> None:
    """`fuzz` every operation of `selected`, with the headers `headers_for` gives it, all of
    them even when one fails; report all."""
    failures: list[str] = []
    for operation in selected:
        if mode is GenerationMode.NEGATIVE and not has_inputs(operation):
            continue
        try:
            fuzz(operation, mode, headers_for(operation), path_parameters)
        except Unsatisfiable:
            # Negative data for an operation whose every input accepts anything.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, FailureGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_api_with_token(
    api_server: Server, api_schema: Any, fresh_user: Account, mode: GenerationMode
) -> None:
    """Signed in as an ordinary user (so admin operations answer 403): no 5xx, only declared
    status codes, bodies matching their declared schemas."""

    def headers_for(operation: Operation) -> Headers:
        if operation.path == LOGOUT:
            return api_server.register(unique("bye")).headers  # A token to lose.
        return fresh_user.headers

    fuzz_each(operations(api_schema), mode, headers_for)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_api_without_token(api_schema: Any, mode: GenerationMode) -> None:
    """Without credentials: protected operations refuse with a declared 401, never a 5xx."""
    fuzz_each(operations(api_schema), mode, lambda _operation: None)


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_messages_of_a_real_room(
    api_schema: Any, fresh_user: Account, mode: GenerationMode
) -> None:
    """History and posting in a room that exists, so that generated cursors, limits, bodies
    and nonces reach the storage rather than stopping at the 404."""
    in_room = [op for op in operations(api_schema) if "{name}" in op.path]
    assert {"GET /api/rooms/{name}/messages", "POST /api/rooms/{name}/messages"} <= {
        op.label for op in in_room
    }
    fuzz_each(in_room, mode, lambda _operation: fresh_user.headers, path_parameters={"name": ROOM})


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_conversation_operations_as_an_admin(
    api_server: Server, api_schema: Any, mode: GenerationMode
) -> None:
    """A room's members, roles, bans and topic, managed by an admin (who acts as its owner):
    generated usernames, roles and topics get past the permission check to the lookups and
    the writes, and still never make a 5xx or an undeclared answer."""
    assert api_server.admin is not None
    admin = api_server.admin.headers
    managing = [
        op
        for op in operations(api_schema)
        if op.path.startswith("/api/rooms/{name}") and not op.path.endswith("/messages")
    ]
    assert {
        "PATCH /api/rooms/{name}",
        "PUT /api/rooms/{name}/members/{username}",
        "PATCH /api/rooms/{name}/members/{username}",
        "PUT /api/rooms/{name}/bans/{username}",
    } <= {op.label for op in managing}
    fuzz_each(managing, mode, lambda _operation: admin, path_parameters={"name": ROOM})


def test_successful_answers_conform(
    api_server: Server, api_schema: Any, fresh_user: Account
) -> None:
    """The answers random data rarely reaches (a token, an admin's view, a repeated nonce)
    match the document too."""
    assert api_server.admin is not None
    username = unique("ok")
    by_label = {op.label: op for op in operations(api_schema)}
    name = unique("ok-room-")
    name_of = {"name": name}
    # The account registered by the first case, in the room fresh_user creates and owns.
    on_other = {"path_parameters": {"name": name, "username": username}}
    cases: list[tuple[str, dict[str, Any], Headers, int]] = [
        (
            "POST /api/auth/register",
            {"body": {"username": username, "password": PASSWORD}},
            None,
            201,
        ),
        (
            "POST /api/auth/token",
            {
                "body": {"username": username, "password": PASSWORD},
                "media_type": "application/x-www-form-urlencoded",
            },
            None,
            200,
        ),
        (
            "POST /api/auth/register",
            {"body": {"username": username, "password": PASSWORD}},
            None,
            409,
        ),
        ("GET /api/admin/active-users", {}, api_server.admin.headers, 200),
        ("GET /api/rooms", {}, fresh_user.headers, 200),
        ("POST /api/rooms", {"body": {"name": name}}, fresh_user.headers, 201),
        ("POST /api/rooms", {"body": {"name": name}}, fresh_user.headers, 409),
        (
            "POST /api/rooms/{name}/messages",
            {"path_parameters": {"name": name}, "body": {"body": "hi", "nonce": "n-1"}},
            fresh_user.headers,
            201,
        ),
        (
            "POST /api/rooms/{name}/messages",
            {"path_parameters": {"name": name}, "body": {"body": "hi", "nonce": "n-1"}},
            fresh_user.headers,
            200,
        ),
        (
            "GET /api/rooms/{name}/messages",
            {"path_parameters": {"name": name}, "query": {"after": 0, "limit": 5}},
            fresh_user.headers,
            200,
        ),
        (
            "GET /api/rooms/{name}/messages",
            {"path_parameters": {"name": "no-such-room"}},
            fresh_user.headers,
            404,
        ),
        ("GET /healthz", {}, None, 200),
        ("GET /api/rooms/{name}", {"path_parameters": {"name": name}}, fresh_user.headers, 200),
        (
            "PATCH /api/rooms/{name}",
            {"path_parameters": {"name": name}, "body": {"topic": "plans"}},
            fresh_user.headers,
            200,
        ),
        ("GET /api/rooms/{name}/members", {"path_parameters": name_of}, fresh_user.headers, 200),
        ("PUT /api/rooms/{name}/members/{username}", on_other, fresh_user.headers, 204),
        (
            "PATCH /api/rooms/{name}/members/{username}",
            {**on_other, "body": {"role": "moderator"}},
            fresh_user.headers,
            204,
        ),
        ("DELETE /api/rooms/{name}/members/{username}", on_other, fresh_user.headers, 204),
        ("PUT /api/rooms/{name}/bans/{username}", on_other, fresh_user.headers, 204),
        ("GET /api/rooms/{name}/bans", {"path_parameters": name_of}, fresh_user.headers, 200),
        ("DELETE /api/rooms/{name}/bans/{username}", on_other, fresh_user.headers, 204),
        ("POST /api/dms", {"body": {"users": [username]}}, fresh_user.headers, 201),
        ("POST /api/dms", {"body": {"users": [username.upper()]}}, fresh_user.headers, 200),
    ]
    if f"POST {LOGOUT}" in by_label:
        leaving = api_server.register(unique("bye")).headers
        cases += [(f"POST {LOGOUT}", {}, leaving, 204), (f"POST {LOGOUT}", {}, leaving, 401)]
    for label, fields, headers, expected in cases:
        case = by_label[label].Case(**fields)
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=15)
        assert response.status_code == expected, (label, fields, response.text)
    with httpx.Client(base_url=api_server.url, timeout=15) as http:
        assert http.get("/healthz").json() == {"status": "ok"}


HOSTILE_BODIES = {
    "NaN": b'{"body": NaN}',
    "-Infinity nonce": b'{"body": "x", "nonce": -Infinity}',
    "overflowing number": b'{"body": 1e999}',
    "NaN in a list": b"[NaN]",
    "lone surrogate escape": b'{"body": "a\\ud800b"}',
    "surrogate bytes": b'{"body": "\xed\xa0\x80"}',
    "surrogate in a key": b'{"body": "x", "k\\udc00": [NaN, "\\ud800"]}',
    "NUL in the body": b'{"body": "a\\u0000b"}',
    "NUL in the nonce": b'{"body": "x", "nonce": "n\\u0000"}',
}


@pytest.mark.parametrize("raw", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
def test_hostile_json_gets_a_422(
    api_server: Server, api_schema: Any, fresh_user: Account, raw: bytes
) -> None:
    """JSON that Python's parser takes but no strict client could (NaN, Infinity, lone
    surrogates), and NULs, which PostgreSQL cannot store: a 422 in strict JSON, never a 5xx,
    and nothing stored."""
    with httpx.Client(base_url=api_server.url, timeout=15) as http:
        r = http.post(
            f"/api/rooms/{ROOM}/messages",
            content=raw,
            headers={**fresh_user.headers, "Content-Type": "application/json"},
        )
        assert r.status_code == 422, r.text
        json.loads(r.text, parse_constant=pytest.fail)  # strict JSON: no NaN
        assert all({"loc", "msg", "type"} <= set(e) for e in r.json()["detail"])
        case = api_schema["/api/rooms/{name}/messages"]["POST"].Case(
            path_parameters={"name": ROOM}, body={}
        )
        case.validate_response(r, checks=CHECKS)
        before = http.get(f"/api/rooms/{ROOM}/messages", headers=fresh_user.headers).json()
        assert not any("\x00" in m["body"] for m in before["messages"])


def test_sign_in_with_a_nul_in_the_username(api_server: Server) -> None:
    """A username no account can have is an ordinary wrong sign-in, on PostgreSQL too (which
    refuses a NUL in a query)."""
    with httpx.Client(base_url=api_server.url, timeout=15) as http:
        r = http.post("/api/auth/token", data={"username": "a\x00b", "password": "whatever12"})
    assert r.status_code == 401, r.text
