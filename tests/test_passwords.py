"""Weak passwords are refused wherever a password is set: the most common ones, in any case,
and the username itself."""

import asyncio
import html
import os
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from passlib.hash import argon2

from chat import fields, security
from chat.db import create_engine
from tests.conftest import PASSWORD, Server, unique
from tests.test_cli import assert_one_line_error, run_chat

# The rules' words (chat/fields.py), spelled out so that these tests run against any version.
COMMON_PASSWORD_RULE = "Passwords must not be one of the most common passwords."
USERNAME_PASSWORD_RULE = "Passwords must not be the username."
WEAK = ["12345678", "password", "PASSWORD", "Password1", "qwerty123", "iloveyou", "11111111"]


def test_the_list_holds_the_usual_suspects_and_not_a_passphrase() -> None:
    assert fields.COMMON_PASSWORD_RULE == COMMON_PASSWORD_RULE
    assert fields.USERNAME_PASSWORD_RULE == USERNAME_PASSWORD_RULE
    assert all(fields.is_common_password(p) for p in WEAK)
    assert not fields.is_common_password(PASSWORD)


@pytest.mark.parametrize("password", WEAK)
def test_api_refuses_a_common_password(server: Server, password: str) -> None:
    body = {"username": unique("weak"), "password": password}
    r = httpx.post(f"{server.url}/api/auth/register", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert COMMON_PASSWORD_RULE in r.text


def test_api_refuses_the_username_as_password(server: Server) -> None:
    name = unique("samename")
    body = {"username": name, "password": name.upper()}
    r = httpx.post(f"{server.url}/api/auth/register", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert USERNAME_PASSWORD_RULE in r.text
    # Control: the same name with a strong password is welcome.
    r = httpx.post(f"{server.url}/api/auth/register", json={**body, "password": PASSWORD})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("password", "error"), [("12345678", COMMON_PASSWORD_RULE), (None, USERNAME_PASSWORD_RULE)]
)
def test_register_form_refuses_a_weak_password(
    server: Server, password: str | None, error: str
) -> None:
    http = server.client()
    csrf = http.get("/register").cookies["csrf_token"]
    name = unique("formweak")
    form = {"username": name, "password": password or name, "csrf_token": csrf}
    r = http.post("/register", data=form)
    assert r.status_code == 400
    assert error in html.unescape(r.text)
    assert "access_token" not in r.cookies


@pytest.mark.parametrize(
    ("password", "error"), [("password", COMMON_PASSWORD_RULE), ("boss-admin", None)]
)
def test_create_admin_refuses_a_weak_password(
    tmp_path: Path, password: str, error: str | None
) -> None:
    result = run_chat("create-admin", "boss-admin", data_dir=tmp_path, CHAT_ADMIN_PASSWORD=password)
    line = assert_one_line_error(result)
    expected = (error or USERNAME_PASSWORD_RULE).rstrip(".")
    assert line.lower() == f"chat: error: {expected}".lower()


# argon2's own defaults: four lanes (threads), 64 MiB, three passes.
OLD_PARAMETERS = {"memory_cost": 65536, "rounds": 3, "parallelism": 4}


def threads_while(work: Callable[[], object]) -> int:
    """The most threads this process had while `work` ran, counted from another thread."""
    most = 0
    done = threading.Event()

    def count() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, len(os.listdir("/proc/self/task")))

    counter = threading.Thread(target=count)
    counter.start()
    try:
        work()
    finally:
        done.set()
        counter.join()
    return most


def test_a_hash_takes_one_thread() -> None:
    """A hash runs in one lane on the thread that asks for it, so the hashing threads
    (cores - 1) leave the event loop a core; argon2's default four lanes start threads of
    their own that took every core for each hash (the control)."""
    before = threads_while(lambda: None)
    # One thread of slack: a server of another test may start one meanwhile.
    assert threads_while(lambda: argon2.using(**OLD_PARAMETERS).hash(PASSWORD)) > before + 1
    assert threads_while(lambda: [security._passwords.hash(PASSWORD) for _ in range(3)]) <= (
        before + 1
    )


def test_a_hash_with_older_parameters_is_renewed_at_sign_in(
    product_hashing_server: Server,
) -> None:
    server = product_hashing_server
    account = server.register()
    old_hash = argon2.using(**OLD_PARAMETERS).hash(account.password)

    async def stored_hash(new: str | None = None) -> str:
        engine = create_engine(server.settings)
        try:
            async with engine.begin() as conn:
                users = sa.table("users", sa.column("username"), sa.column("password_hash"))
                where = users.c.username == account.username
                if new is not None:
                    await conn.execute(sa.update(users).where(where).values(password_hash=new))
                value = await conn.scalar(sa.select(users.c.password_hash).where(where))
                return str(value)
        finally:
            await engine.dispose()

    assert asyncio.run(stored_hash(old_hash)) == old_hash
    form = {"username": account.username, "password": account.password}
    assert httpx.post(f"{server.url}/api/auth/token", data=form, timeout=30).status_code == 200
    renewed = asyncio.run(stored_hash())
    assert renewed != old_hash
    assert "m=47104,t=1,p=1" in renewed
    assert httpx.post(f"{server.url}/api/auth/token", data=form, timeout=30).status_code == 200
