"""Real servers on ephemeral ports, and factories for users and rooms."""

import asyncio
import contextlib
import fcntl
import functools
import itertools
import json
import os
import secrets
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from jose import jwt
from websockets.sync.client import ClientConnection, connect

from chat.app import create_app
from chat.cli import uvicorn_options
from chat.db import migrate
from chat.logs import log_config
from chat.security import ARGON2_MEMORY_KIB, SESSION_CLAIM, TOKEN_KEY_CLAIM
from chat.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# `postgresql` runs every server of the suite on a fresh PostgreSQL database.
TEST_DATABASE = os.environ.get("CHAT_TEST_DATABASE", "sqlite")
POSTGRES_URL = os.environ.get("CHAT_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "correct horse battery"
# Test servers hash passwords with argon2 at this memory cost (KiB) instead of the
# product's ARGON2_MEMORY_KIB: well under a millisecond a hash instead of ~65 ms, over the
# thousands of accounts the suite registers and signs in. The tests about hashing itself
# (its cost to the event loop, the hashing queue, renewing old hashes) use the product's.
TEST_HASH_MEMORY_KIB = 64
_names = itertools.count(1)


def need(available: bool, what: str) -> None:
    """Skip without `what` outside CI; in CI a missing part is a failure, never a skip."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is not available")


class SharedChromium:
    """One Chromium for the browser tests that run one after another, instead of a launch per
    module. Playwright's sync API holds the main thread's event loop while it runs, and other
    tests call `asyncio.run` there: it is stopped after a test once nobody holds it and the
    next test's module has no `browser` fixture (see `pytest_runtest_teardown`)."""

    def __init__(self) -> None:
        self._playwright: Any = None
        self._browser: Any = None
        self._users = 0

    @contextlib.contextmanager
    def use(self, executable: str, args: list[str]) -> Iterator[Any]:
        if self._browser is None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(executable_path=executable, args=args)
        self._users += 1
        try:
            yield self._browser
        finally:
            self._users -= 1

    def stop_unless_held(self) -> None:
        if self._users:
            return
        browser, playwright = self._browser, self._playwright
        self._browser = self._playwright = None
        try:
            if browser is not None:
                browser.close()
        finally:
            if playwright is not None:
                playwright.stop()


shared_chromium = SharedChromium()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # After the default teardown, so that the module's contexts and pages are closed first.
    if nextitem is None or not hasattr(getattr(nextitem, "module", None), "browser"):
        shared_chromium.stop_unless_held()


class RunLock:
    """Shared by the worker processes of one run (pytest-xdist): a test marked `exclusive`
    holds it alone, every other test holds it together with the others. The tests that time
    the server (its event loop's lag, how soon something happens) then run while no other
    test's servers compete for the 2 CPUs, and the rest still run side by side.

    Two flock(2) locks: `gate` keeps the workers' next tests out while an exclusive test waits
    for the ones running to end, so that it is not put off for ever."""

    def __init__(self, directory: Path) -> None:
        self._main = os.open(directory / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._gate = os.open(directory / "run.gate", os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._main, fcntl.LOCK_UN)


run_lock: RunLock | None = None


def pytest_configure(config: pytest.Config) -> None:
    global run_lock
    config.addinivalue_line(
        "markers", "exclusive: run while no other test runs (it times the server)"
    )
    if os.environ.get("PYTEST_XDIST_WORKER") and config.option.basetemp:
        # A worker's base temporary directory is one of the run's, beside the others'.
        run_lock = RunLock(Path(config.option.basetemp).parent)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # Outermost, from setup to teardown: the module's and session's fixtures that the test
    # starts or stops are inside, and pytest-timeout does not count the wait.
    if run_lock is None:
        return (yield)
    with run_lock.hold(item.get_closest_marker("exclusive") is not None):
        return (yield)


def unique(prefix: str = "u") -> str:
    return f"{prefix}{next(_names)}{secrets.token_hex(2)}"


@dataclass
class Account:
    id: int
    username: str
    password: str
    token: str
    is_admin: bool

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def token_key(self) -> str:
        """The account's token key, which every token of the account must carry."""
        key: str = jwt.get_unverified_claims(self.token)[TOKEN_KEY_CLAIM]
        return key

    @property
    def sid(self) -> str:
        """The session of the account's token, which other tokens of that session name too."""
        sid: str = jwt.get_unverified_claims(self.token)[SESSION_CLAIM]
        return sid


@dataclass
class Server:
    settings: Settings
    port: int = 0
    thread: threading.Thread | None = None
    server: uvicorn.Server | None = None
    admin: Account | None = None
    # Replaces uvicorn's WebSocket protocol (the product's is `chat.wsprotocol.PROTOCOL`).
    ws_protocol: str | None = None
    # False: an untouched database is migrated step by step, not copied from a migrated one.
    copy_migrated: bool = True
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        # In a thread of its own: migrations run their own event loop, and the caller
        # may be inside one (Playwright's sync API keeps one in the main thread).
        with ThreadPoolExecutor(1) as pool:
            copied = self.copy_migrated and pool.submit(start_from_migrated, self.settings).result()
            if not copied:
                pool.submit(migrate, self.settings).result()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        options = uvicorn_options(self.settings)
        if self.ws_protocol is not None:
            options["ws"] = self.ws_protocol
        config = uvicorn.Config(
            create_app(self.settings), log_config=log_config("WARNING"), **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(15)
        if self.settings.database_url.startswith("postgresql://"):
            drop_postgres_database(self.settings.database_url)

    def open_connections(self) -> int:
        """WebSocket connections uvicorn holds open now: a socket counts until the server has
        let go of it, its handler finished."""
        assert self.server is not None
        return sum(
            type(c).__module__.startswith(("uvicorn.protocols.websockets", "chat.wsprotocol"))
            for c in self.server.server_state.connections
        )

    def client(self, **kwargs: Any) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=15, **kwargs)
        self._clients.append(client)
        return client

    def register(self, username: str | None = None, password: str = PASSWORD) -> Account:
        username = username or unique()
        with httpx.Client(base_url=self.url, timeout=15) as http:
            r = http.post("/api/auth/register", json={"username": username, "password": password})
            assert r.status_code == 201, r.text
            user = r.json()
            r = http.post("/api/auth/token", data={"username": username, "password": password})
            assert r.status_code == 200, r.text
        return Account(user["id"], username, password, r.json()["access_token"], user["is_admin"])

    def create_room(self, account: Account, name: str | None = None) -> str:
        name = name or unique("room-")
        with httpx.Client(base_url=self.url, timeout=15) as http:
            r = http.post("/api/rooms", json={"name": name}, headers=account.headers)
            assert r.status_code == 201, r.text
        return name

    def ws(
        self,
        path: str,
        account: Account | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> ClientConnection:
        """A real WebSocket client; with `account`, it sends the account's bearer token."""
        all_headers = dict(headers or {})
        if account is not None:
            all_headers.setdefault("Authorization", f"Bearer {account.token}")
        if token is not None:
            sep = "&" if "?" in path else "?"
            path = f"{path}{sep}token={token}"
        return connect(
            f"{self.ws_url}{path}",
            additional_headers=all_headers,
            open_timeout=10,
            close_timeout=5,
            max_size=None,
            **kwargs,
        )


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    return _answers(5432)


def redis_available() -> bool:
    return _answers(6379)


def _run_async(coroutine: Any) -> Any:
    # A thread of its own: the caller may be inside an event loop (Playwright's).
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def new_postgres_database(migrated: bool = False) -> str:
    """A fresh PostgreSQL database, empty or (`migrated`) a copy of one migrated once per
    run; its URL."""
    need(postgres_available(), "PostgreSQL at 127.0.0.1:5432")
    name = f"chat_test_{secrets.token_hex(6)}"
    template = f' TEMPLATE "{migrated_postgres_database().rsplit("/", 1)[1]}"' if migrated else ""

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"{template}')
        finally:
            await conn.close()

    _run_async(create())
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    _run_async(drop())


@functools.cache
def migrated_sqlite_file() -> Path:
    """A SQLite database migrated once per test run, for servers to start from a copy."""
    data_dir = Path(tempfile.mkdtemp(prefix="chat-migrated-"))
    settings = Settings(data_dir=data_dir, secret_key=secrets.token_urlsafe(48))
    migrate(settings)
    return data_dir / "chat.db"


@functools.cache
def migrated_postgres_database() -> str:
    """A PostgreSQL database migrated once per test run (nothing stays connected to it), for
    servers' databases to be created from as a template."""
    url = new_postgres_database()
    migrate(Settings(data_dir=Path(tempfile.gettempdir()), database_url=url, secret_key="x" * 48))
    return url


def pytest_sessionfinish() -> None:
    if migrated_sqlite_file.cache_info().currsize:
        shutil.rmtree(migrated_sqlite_file().parent, ignore_errors=True)
    if migrated_postgres_database.cache_info().currsize:
        drop_postgres_database(migrated_postgres_database())


def start_from_migrated(settings: Settings) -> bool:
    """Make an untouched database a copy of one migrated once, which takes a fraction of the
    migrations' time; whether it did. A database with anything in it (one a test migrated
    to an older revision) is left to the migrations."""
    if not settings.database_url:
        path = settings.data_dir / "chat.db"
        if path.exists():
            return False
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(migrated_sqlite_file())) as source:
            # Created as the product creates it: readable by this user only.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            with contextlib.closing(sqlite3.connect(path)) as copy:
                source.backup(copy)
        return True
    if not settings.database_url.startswith(POSTGRES_URL.rsplit("/", 1)[0] + "/chat_test_"):
        return False
    name = settings.database_url.rsplit("/", 1)[1]
    template = migrated_postgres_database().rsplit("/", 1)[1]

    async def recreate() -> bool:
        conn = await asyncpg.connect(settings.database_url)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
        finally:
            await conn.close()
        if tables:
            return False
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        return True

    copied: bool = asyncio.run(recreate())
    return copied


def run_sql(server: "Server", sql: str) -> None:
    """Run one statement on a server's database behind its back, as an operator would."""
    url = server.settings.database_url
    if not url:
        with sqlite3.connect(server.settings.data_dir / "chat.db") as conn:
            conn.execute(sql)
        return

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_async(run())


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp,
        "secret_key": secrets.token_urlsafe(48),
        # Servers shared by many tests open more sockets per user than a person would.
        "ws_handshakes_burst": 10**6,
        # The shared servers register many accounts from one address.
        "register_burst": 10**6,
        "register_global_burst": 10**6,
        # Accounts shared by a module's tests make a room per test; test_room_limits.py
        # tests the limits with its own.
        "rooms_per_user": 100_000,
        "room_create_burst": 100_000,
        "password_hash_memory_kib": TEST_HASH_MEMORY_KIB,
    }
    if TEST_DATABASE == "postgresql" and "database_url" not in overrides:
        values["database_url"] = new_postgres_database()
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the session; its first account, `server.admin`, is the admin."""
    srv = Server(make_settings(tmp_path_factory.mktemp("server")))
    srv.start()
    srv.admin = srv.register(unique("admin"))
    assert srv.admin.is_admin
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def product_hashing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server for the tests about password hashing: argon2 at the product's cost."""
    srv = Server(
        make_settings(tmp_path_factory.mktemp("server"), password_hash_memory_kib=ARGON2_MEMORY_KIB)
    )
    srv.start()
    srv.admin = srv.register(unique("admin"))
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start a server of its own with some settings changed; `copy_migrated=False` has its
    database migrated step by step instead of copied from a migrated one."""
    started: list[Server] = []

    def start(*, copy_migrated: bool = True, **overrides: Any) -> Server:
        srv = Server(
            make_settings(tmp_path_factory.mktemp("server"), **overrides),
            copy_migrated=copy_migrated,
        )
        srv.start()
        srv.admin = srv.register(unique("admin"))
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def user(server: Server) -> Account:
    return server.register()


@pytest.fixture
def room(server: Server, user: Account) -> str:
    return server.create_room(user)


def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5
) -> dict[str, Any]:
    """The first frame matching `predicate`, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no matching frame")
        frame = recv(ws, remaining)
        if predicate(frame):
            return frame


def of_type(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def match(frame: dict[str, Any]) -> bool:
        return frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items())

    return match
