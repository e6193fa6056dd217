"""Accounts and access tokens: `/api/auth/register`, `/api/auth/token`, and JWT refusals."""

import base64
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from chat.security import JWT_ALGORITHM, create_access_token, decode_access_token
from tests.conftest import PASSWORD, Account, Server, make_settings, unique

REGISTER = "/api/auth/register"
TOKEN = "/api/auth/token"


def register(server: Server, payload: Any = None, **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        if payload is not None:
            kwargs["json"] = payload
        return http.post(REGISTER, **kwargs)


def token_for(server: Server, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.post(TOKEN, data={"username": username, "password": password})


def assert_validation_error(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all({"loc", "msg", "type"} <= set(item) for item in detail)


# --- registration -----------------------------------------------------------------------


def test_register_returns_the_new_account(server: Server) -> None:
    """Registering answers 201 with exactly the account's id, username and admin flag."""
    name = unique("Reg")
    r = register(server, {"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "username", "is_admin"}
    assert isinstance(body["id"], int)
    assert body["username"] == name
    assert body["is_admin"] is False


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server over an empty database with no account at all."""
    srv = Server(make_settings(tmp_path))
    srv.start()
    yield srv
    srv.stop()


def test_first_account_on_empty_database_is_admin(fresh_server: Server) -> None:
    """The first account of an empty database is admin; the next one is not."""
    first = register(fresh_server, {"username": unique("first"), "password": PASSWORD})
    second = register(fresh_server, {"username": unique("second"), "password": PASSWORD})
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["is_admin"] is True
    assert second.json()["is_admin"] is False


def test_register_taken_name_ignoring_case(server: Server) -> None:
    """A username that differs from a taken one only in case answers 409."""
    name = unique("Case")
    assert register(server, {"username": name, "password": PASSWORD}).status_code == 201
    for variant in (name, name.upper(), name.lower(), name.swapcase()):
        r = register(server, {"username": variant, "password": PASSWORD})
        assert r.status_code == 409, (variant, r.text)
        assert isinstance(r.json()["detail"], str)


@pytest.mark.parametrize("length", [3, 32])
def test_register_accepts_username_length_bounds(server: Server, length: int) -> None:
    """Usernames of exactly 3 and 32 allowed characters are accepted."""
    name = ("a._-" + secrets.token_hex(16))[:length]
    r = register(server, {"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("length", [8, 1024])
def test_register_accepts_password_length_bounds(server: Server, length: int) -> None:
    """Passwords of exactly 8 and 1024 characters are accepted and work for sign-in."""
    name, password = unique("pw"), "p" * length
    assert register(server, {"username": name, "password": password}).status_code == 201
    assert token_for(server, name, password).status_code == 200


@pytest.mark.parametrize(
    "username",
    ["ab", "a" * 33, "", "bad name", "bad/name", "bad@name", "ünïcode", "abc\n", "<script>"],
)
def test_register_rejects_bad_usernames(server: Server, username: str) -> None:
    """Usernames outside 3-32 of `A-Za-z0-9_.-` are refused with FastAPI's 422 shape."""
    assert_validation_error(register(server, {"username": username, "password": PASSWORD}))


@pytest.mark.parametrize("password", ["p" * 7, "p" * 1025, ""])
def test_register_rejects_bad_passwords(server: Server, password: str) -> None:
    """Passwords shorter than 8 or longer than 1024 characters are refused with 422."""
    assert_validation_error(register(server, {"username": unique(), "password": password}))


@pytest.mark.parametrize(
    "payload",
    [
        {"username": 12345, "password": PASSWORD},
        {"username": "valid_name", "password": 123456789},
        {"username": None, "password": PASSWORD},
        {"username": ["abc"], "password": PASSWORD},
        ["abc", PASSWORD],
        "abc",
    ],
)
def test_register_rejects_wrong_types(server: Server, payload: Any) -> None:
    """Fields of the wrong JSON type, or a body that is no object, are refused with 422."""
    assert_validation_error(register(server, payload))


def test_register_rejects_extra_fields(server: Server) -> None:
    """Unknown fields, such as a self-granted `is_admin`, are refused with 422."""
    name = unique()
    payload = {"username": name, "password": PASSWORD, "is_admin": True}
    assert_validation_error(register(server, payload))
    assert token_for(server, name, PASSWORD).status_code == 401


@pytest.mark.parametrize("payload", [{"username": "someone"}, {"password": PASSWORD}, {}])
def test_register_rejects_missing_fields(server: Server, payload: dict[str, str]) -> None:
    """A body without username or password is refused with 422."""
    assert_validation_error(register(server, payload))


@pytest.mark.parametrize("content", [b'{"username": "abc", ', b"not json", b""])
def test_register_rejects_malformed_json(server: Server, content: bytes) -> None:
    """A body that is not valid JSON is refused with 422, never a 5xx."""
    r = register(server, content=content, headers={"Content-Type": "application/json"})
    assert_validation_error(r)


# --- tokens -----------------------------------------------------------------------------


def test_token_for_valid_credentials(server: Server) -> None:
    """Right credentials give a bearer token naming the user, with its lifetime in seconds."""
    name = unique()
    user_id = register(server, {"username": name, "password": PASSWORD}).json()["id"]
    r = token_for(server, name, PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
    }
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == server.settings.token_ttl_minutes * 60
    claims = decode_access_token(body["access_token"], server.settings.signing_key())
    assert claims.user_id == user_id
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_token_refusals_are_indistinguishable(server: Server) -> None:
    """An unknown user and a wrong password get the same 401 and the same message."""
    name = unique()
    register(server, {"username": name, "password": PASSWORD})
    wrong_password = token_for(server, name, PASSWORD + "x")
    unknown_user = token_for(server, unique("ghost"), PASSWORD)
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()
    assert wrong_password.headers.get("www-authenticate") == "Bearer"
    assert "access_token" not in wrong_password.text


def test_token_requires_the_form_fields(server: Server) -> None:
    """A token request without the password form field is refused with 422."""
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.post(TOKEN, data={"username": unique()})
    assert_validation_error(r)


# --- JWT refusals -----------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_for(user_id: int, **changes: Any) -> dict[str, Any]:
    """Valid claims for `user_id`; a change of None drops that claim."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=10)).timestamp()),
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def rooms_status(server: Server, token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=15) as http:
        return http.get("/api/rooms", headers=headers).status_code


def test_handmade_valid_token_is_accepted(server: Server) -> None:
    """A token built here the way the server builds them is accepted (control for refusals)."""
    account = server.register()
    key = server.settings.signing_key()
    claims = claims_for(account.id, tkey=account.token_key, sid=account.sid)
    assert rooms_status(server, jwt.encode(claims, key, JWT_ALGORITHM)) == 200
    ttl = timedelta(minutes=5)
    token = create_access_token(account.id, account.token_key, key, ttl, account.sid)
    assert rooms_status(server, token) == 200


def _tampered(token: str, user_id: int, tkey: str) -> str:
    header, _payload, signature = token.split(".")
    return ".".join([header, _b64(claims_for(user_id, tkey=tkey)), signature])


def _refused_tokens(server: Server, attacker: Account, victim_id: int) -> dict[str, str | None]:
    user_id, tkey, sid = attacker.id, attacker.token_key, attacker.sid
    key = server.settings.signing_key()
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    valid = jwt.encode(claims_for(user_id, tkey=tkey, sid=sid), key, JWT_ALGORITHM)
    return {
        "missing": None,
        "dots only": "..",
        "garbage": "not-a-jwt",
        "three garbage parts": "aaa.bbb.ccc",
        "expired": jwt.encode(
            claims_for(
                user_id,
                tkey=tkey,
                sid=sid,
                iat=int((now - 2 * hour).timestamp()),
                exp=int((now - hour).timestamp()),
            ),
            key,
            JWT_ALGORITHM,
        ),
        "iat in the future": jwt.encode(
            claims_for(
                user_id,
                tkey=tkey,
                sid=sid,
                iat=int((now + hour).timestamp()),
                exp=int((now + 2 * hour).timestamp()),
            ),
            key,
            JWT_ALGORITHM,
        ),
        "nbf in the future": jwt.encode(
            {**claims_for(user_id, tkey=tkey, sid=sid), "nbf": int((now + hour).timestamp())},
            key,
            JWT_ALGORITHM,
        ),
        "RS256 with an attacker's key": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid), _rsa_pem(), "RS256"
        ),
        "tampered payload": _tampered(valid, victim_id, tkey),
        "alg none": ".".join(
            [_b64({"alg": "none", "typ": "JWT"}), _b64(claims_for(user_id, tkey=tkey, sid=sid)), ""]
        ),
        "alg none with signature": ".".join(
            [
                _b64({"alg": "none", "typ": "JWT"}),
                _b64(claims_for(user_id, tkey=tkey, sid=sid)),
                valid.split(".")[2],
            ]
        ),
        "HS512 with the right key": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid), key, "HS512"
        ),
        "HS384 with the right key": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid), key, "HS384"
        ),
        "wrong key": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid), secrets.token_urlsafe(48), JWT_ALGORITHM
        ),
        "missing sub": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid, sub=None), key, JWT_ALGORITHM
        ),
        "missing exp": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid, exp=None), key, JWT_ALGORITHM
        ),
        "missing iat": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid, iat=None), key, JWT_ALGORITHM
        ),
        "non-numeric sub": jwt.encode(
            claims_for(user_id, tkey=tkey, sid=sid, sub="admin"), key, JWT_ALGORITHM
        ),
        "user does not exist": jwt.encode(
            claims_for(987_654_321, tkey=tkey, sid=sid), key, JWT_ALGORITHM
        ),
    }


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


REFUSED = [
    "missing",
    "dots only",
    "garbage",
    "three garbage parts",
    "expired",
    "iat in the future",
    "nbf in the future",
    "RS256 with an attacker's key",
    "tampered payload",
    "alg none",
    "alg none with signature",
    "HS512 with the right key",
    "HS384 with the right key",
    "wrong key",
    "missing sub",
    "missing exp",
    "missing iat",
    "non-numeric sub",
    "user does not exist",
]


@pytest.fixture(scope="module")
def attacker(server: Server) -> Account:
    return server.register()


@pytest.mark.parametrize("case", REFUSED)
def test_invalid_tokens_are_refused(server: Server, attacker: Account, case: str) -> None:
    """A missing, malformed, expired, tampered, wrongly signed or orphaned token gets 401."""
    assert server.admin is not None
    tokens = _refused_tokens(server, attacker, server.admin.id)
    assert set(tokens) == set(REFUSED)
    assert rooms_status(server, tokens[case]) == 401, case
