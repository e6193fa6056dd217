"""The `chat` command, run as a real subprocess: serve, migrate, create-admin, create-user."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chat.db import PROJECT_DIR
from chat.fields import PASSWORD_RULE, USERNAME_RULE
from tests.conftest import PASSWORD, Server, make_settings, unique

ADMIN_PASSWORD = "admin password 1"


def _environment(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHAT_")}
    environ.update(CHAT_DATA_DIR=str(data_dir), **env)
    return environ


def start_chat(*args: str, data_dir: Path, **env: str) -> subprocess.Popen[str]:
    """Start `python -m chat ARGS` with a clean `CHAT_*` environment and stdin that is no TTY."""
    return subprocess.Popen(
        [sys.executable, "-m", "chat", *args],
        cwd=PROJECT_DIR,
        env=_environment(data_dir, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_chat(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return finish(start_chat(*args, data_dir=data_dir, **env))


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr and no traceback; returns the line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chat: error:"), lines[0]
    return lines[0]


NO_DIR_URL = "sqlite:////nonexistent-dir/x/y.db"
# Commands that must fail at once, by name: (arguments, extra environment).
FAILING: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "serve with workers": (("serve", "--workers", "2", "--port", "0"), {}),
    "migrate: no such directory": (("migrate",), {"CHAT_DATABASE_URL": NO_DIR_URL}),
    "migrate: not a URL": (("migrate",), {"CHAT_DATABASE_URL": "nonsense"}),
    "migrate: unknown scheme": (("migrate",), {"CHAT_DATABASE_URL": "foo://bar"}),
    "migrate: unreachable server": (
        ("migrate",),
        {"CHAT_DATABASE_URL": "postgresql://chat:chat@127.0.0.1:1/chat"},
    ),
    "migrate: driver not installed": (
        ("migrate",),
        {"CHAT_DATABASE_URL": "mysql://chat@127.0.0.1:1/chat"},
    ),
    "serve: no such directory": (("serve", "--port", "0"), {"CHAT_DATABASE_URL": NO_DIR_URL}),
    "serve: not a URL": (("serve", "--port", "0"), {"CHAT_DATABASE_URL": "nonsense"}),
    "bad setting value": (("migrate",), {"CHAT_TOKEN_TTL_MINUTES": "soon"}),
    "create-admin without password": (("create-admin", "boss"), {}),
    "create-admin with a bad username": (
        ("create-admin", "no spaces"),
        {"CHAT_ADMIN_PASSWORD": ADMIN_PASSWORD},
    ),
    "create-admin with a short password": (
        ("create-admin", "boss"),
        {"CHAT_ADMIN_PASSWORD": "short"},
    ),
    "create-user with a short password": (
        ("create-user", "someone"),
        {"CHAT_ADMIN_PASSWORD": "short"},
    ),
}


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every FAILING command, run concurrently (each one is mostly interpreter start-up)."""
    started = {
        name: start_chat(*args, data_dir=tmp_path_factory.mktemp("cli"), **env)
        for name, (args, env) in FAILING.items()
    }
    return {name: finish(process) for name, process in started.items()}


def test_help_lists_commands(tmp_path: Path) -> None:
    """`chat --help` lists serve, migrate, create-admin and create-user."""
    result = run_chat("--help", data_dir=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "migrate", "create-admin", "create-user"):
        assert command in result.stdout


def test_serve_many_workers_needs_a_shared_broker(
    failed: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """`serve --workers 2` with the in-memory broker exits 2 with one line naming the fix."""
    result = failed["serve with workers"]
    assert result.returncode == 2
    assert "CHAT_BROKER_URL" in assert_one_line_error(result)


@pytest.mark.parametrize("case", [name for name in FAILING if ": " in name])
def test_unusable_database_url(
    failed: dict[str, subprocess.CompletedProcess[str]], case: str
) -> None:
    """`migrate` and `serve` with an unreachable or malformed database URL fail with one line."""
    assert "database" in assert_one_line_error(failed[case]).lower()


def test_invalid_setting_value(failed: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """A setting of the wrong type stops the command with one line naming the variable."""
    assert "CHAT_TOKEN_TTL_MINUTES" in assert_one_line_error(failed["bad setting value"])


def test_create_admin_needs_a_password(failed: dict[str, subprocess.CompletedProcess[str]]) -> None:
    """`create-admin` without a terminal or CHAT_ADMIN_PASSWORD fails with one line."""
    result = failed["create-admin without password"]
    assert "CHAT_ADMIN_PASSWORD" in assert_one_line_error(result)


@pytest.mark.parametrize(
    ("case", "rule"),
    [
        ("create-admin with a bad username", f"usernames are {USERNAME_RULE}"),
        ("create-admin with a short password", f"passwords are {PASSWORD_RULE}"),
        ("create-user with a short password", f"passwords are {PASSWORD_RULE}"),
    ],
)
def test_create_admin_states_the_rule(
    failed: dict[str, subprocess.CompletedProcess[str]], case: str, rule: str
) -> None:
    """`create-admin` refuses what registration refuses, in the words the register page shows."""
    assert assert_one_line_error(failed[case]) == f"chat: error: {rule}"


def test_migrate_on_empty_data_dir(tmp_path: Path) -> None:
    """`migrate` on an empty data dir creates the database with its `general` room."""
    data_dir = tmp_path / "fresh"
    result = run_chat("migrate", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(data_dir / "chat.db") as db:
        rooms = [name for (name,) in db.execute("SELECT name FROM rooms")]
    assert rooms == ["general"]
    again = run_chat("migrate", data_dir=data_dir)
    assert again.returncode == 0, again.stderr


def test_create_admin_creates_and_promotes(tmp_path: Path) -> None:
    """`create-admin` creates a working admin, and promotes an existing normal user."""
    boss = unique("boss")
    result = run_chat("create-admin", boss, data_dir=tmp_path, CHAT_ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr

    # The same database as the command's: SQLite in the data dir.
    srv = Server(make_settings(tmp_path, database_url=""))
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=15) as http:

            def admin_status(username: str, password: str) -> int:
                r = http.post("/api/auth/token", data={"username": username, "password": password})
                assert r.status_code == 200, r.text
                token = r.json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                return http.get("/api/admin/active-users", headers=headers).status_code

            assert admin_status(boss, ADMIN_PASSWORD) == 200

            # The database had an account already, so this one is no admin...
            member = srv.register(unique("member"))
            assert member.is_admin is False
            assert admin_status(member.username, PASSWORD) == 403

            # ...until create-admin promotes it (the password becomes CHAT_ADMIN_PASSWORD).
            result = run_chat(
                "create-admin",
                member.username.upper(),
                data_dir=tmp_path,
                CHAT_ADMIN_PASSWORD=ADMIN_PASSWORD,
            )
            assert result.returncode == 0, result.stderr
            assert "promoted" in result.stdout
            assert admin_status(member.username, ADMIN_PASSWORD) == 200
    finally:
        srv.stop()
    with sqlite3.connect(tmp_path / "chat.db") as db:
        count = db.execute(
            "SELECT count(*) FROM users WHERE username_key = ?", (member.username.lower(),)
        ).fetchone()[0]
    assert count == 1


def test_create_user_on_a_closed_server(tmp_path: Path) -> None:
    """With registration closed, `create-user` still makes accounts that can sign in: the
    first one is the admin, the next only with --admin; a taken name fails with one line."""
    closed = {"CHAT_REGISTRATION": "closed", "CHAT_ADMIN_PASSWORD": ADMIN_PASSWORD}
    first, member, boss = unique("first"), unique("member"), unique("boss")
    outputs = []
    for args in ((first,), (member,), (boss, "--admin")):
        result = run_chat("create-user", *args, data_dir=tmp_path, **closed)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.strip())
    assert outputs == [f"{first} created as admin", f"{member} created", f"{boss} created as admin"]
    taken = run_chat("create-user", member.upper(), data_dir=tmp_path, **closed)
    assert "taken" in assert_one_line_error(taken)

    srv = Server(make_settings(tmp_path, database_url="", registration="closed"))
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=15) as http:
            body = {"username": unique("stranger"), "password": PASSWORD}
            assert http.post("/api/auth/register", json=body).status_code == 403
            for username, admin_status in ((first, 200), (member, 403), (boss, 200)):
                form = {"username": username, "password": ADMIN_PASSWORD}
                r = http.post("/api/auth/token", data=form)
                assert r.status_code == 200, r.text
                headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
                assert http.get("/api/admin/active-users", headers=headers).status_code == (
                    admin_status
                )
                if username == first:
                    alerts = http.get("/api/admin/alerts", headers=headers).json()["alerts"]
    finally:
        srv.stop()
    # An admin sees the accounts the command made among the alerts, as registrations.
    made = [a["detail"] for a in alerts if a["kind"] == "user_registered"]
    assert made == [f"{name} created (command line)" for name in (boss, member, first)]
