"""Every setting of the server, read from `CHAT_*` environment variables."""

import os
import re
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chat.security import ARGON2_MEMORY_KIB

SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_CHARS = 32
MIN_METRICS_TOKEN_CHARS = 16
# Values copied from examples and tutorials; a server signing tokens with one of
# them lets anybody mint an admin token.
PLACEHOLDER_SECRETS = frozenset({"secret", "changeme", "change-me", "your-secret-key", "dev"})


# CHAT_REGISTRATION's values.
Registration = Literal["open", "invite", "closed"]
# CHAT_LOG_FORMAT's values: lines for people, or one JSON object per line for collectors.
LogFormat = Literal["text", "json"]


class SettingsError(Exception):
    """A setting that cannot work; its message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str = ""
    broker_url: str = "memory://"
    secret_key: str = ""
    token_ttl_minutes: int = Field(60, ge=1, le=60 * 24 * 30)
    # Sessions: a sign-in's life since its last use (sliding), and, for tests only, an access
    # token lifetime in seconds that replaces `token_ttl_minutes`.
    session_days: int = Field(30, ge=1, le=3650)
    token_ttl_secs: int | None = Field(None, ge=1)
    # NoDecode: the variable is comma-separated, not JSON; `_split_origins` parses it.
    allowed_origins: Annotated[list[str], NoDecode] = []

    # How long after sending a message its author may edit it (SPEC "Message lifecycle").
    edit_window_minutes: int = Field(1440, ge=0)
    # Every user gets a bucket of `rate_burst` messages refilled at
    # `rate_per_sec`, shared by all of their sockets and the REST post.
    rate_burst: int = Field(20, ge=1)
    rate_per_sec: float = Field(5.0, gt=0)
    # Failed sign-ins allowed per account and per client address: a burst, then per minute.
    login_failures_burst: int = Field(10, ge=1)
    login_failures_per_min: float = Field(5.0, gt=0)
    login_address_failures_burst: int = Field(50, ge=1)
    login_address_failures_per_min: float = Field(30.0, gt=0)
    # Registrations per client address and for the whole server (a burst, then per hour);
    # password hashes that may wait per priority before requests get 503; the proxies whose
    # X-Forwarded-For names the client (comma-separated addresses or networks, or "*").
    register_burst: int = Field(10, ge=1)
    register_per_hour: float = Field(30.0, gt=0)
    register_global_burst: int = Field(100, ge=1)
    register_global_per_hour: float = Field(1000.0, gt=0)
    hash_queue_max: int = Field(64, ge=1)
    # Tests only: argon2's memory cost in KiB, in place of the 46 MiB every deployment
    # should keep; a test suite registers thousands of accounts. Hashes made with another
    # cost still verify, and are renewed at the next sign-in.
    password_hash_memory_kib: int = Field(ARGON2_MEMORY_KIB, ge=8)
    forwarded_allow_ips: str = "127.0.0.1"
    # Who may register: everybody, invite holders only, or nobody (admins invite or create).
    registration: Registration = "open"
    # Error frames a socket may earn within `abuse_window_secs` before it is closed.
    abuse_max_errors: int = Field(30, ge=1)
    abuse_window_secs: float = Field(10.0, gt=0)

    ws_ping_interval_secs: float = Field(20.0, gt=0)
    ws_ping_timeout_secs: float = Field(20.0, gt=0)
    ws_max_frame_bytes: int = Field(64 * 1024, ge=1024)
    # What a socket may have waiting to be sent before it counts as too slow and is
    # dropped: bytes in its transport's buffer, or frames queued before its welcome.
    send_buffer_max_bytes: int = Field(1024 * 1024, ge=1)
    send_queue_max: int = Field(1024, ge=1)
    max_connections_per_user: int = Field(20, ge=1)
    # Per socket: frames of any kind (pings included) a client may send, a burst then per
    # second; per user: socket handshakes, shared across processes with Redis. Beyond: 4429.
    ws_frames_burst: int = Field(200, ge=1)
    ws_frames_per_sec: float = Field(50.0, gt=0)
    ws_handshakes_burst: int = Field(30, ge=1)
    ws_handshakes_per_sec: float = Field(1.0, gt=0)

    # Prefix of every Redis key and channel, so that deployments can share one Redis.
    redis_namespace: str = Field("chat", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # With Redis: a user of a process that died leaves presence within this time.
    presence_ttl_secs: float = Field(30.0, ge=1.0)
    # A noisy alert (a throttled sign-in, an abusive socket) is raised once per address or
    # user within this time.
    alert_window_secs: float = Field(300.0, gt=0)
    # Tests only: the period of the dashboard's history points, a minute otherwise.
    stats_period_secs: float = Field(60.0, gt=0, le=60.0)
    # Database connections per process (PostgreSQL): kept open, and extra under load.
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    # HTTP limits of `chat serve`: a request head's size and header lines, the time to
    # receive a head and a body, idle keep-alive, and connections (HTTP and WebSocket)
    # open at once per process; beyond it a new connection gets 503.
    http_max_header_bytes: int = Field(64 * 1024, ge=1024)
    http_max_headers: int = Field(100, ge=8)
    # No request of the API needs more (a message is at most 4000 characters).
    http_max_body_bytes: int = Field(64 * 1024, ge=1024)
    http_head_timeout_secs: float = Field(10.0, gt=0)
    http_body_timeout_secs: float = Field(30.0, gt=0)
    http_keepalive_secs: int = Field(5, ge=1)
    max_connections: int = Field(10_000, ge=1)

    # Behind an HTTPS proxy the session cookie must only travel over TLS.
    cookie_secure: bool = False
    # Rooms an account may create (admins: any number), and how fast: a burst, then per hour.
    rooms_per_user: int = Field(50, ge=0)
    room_create_burst: int = Field(10, ge=1)
    room_create_per_hour: float = Field(30.0, gt=0)
    # Membership changes (joins, adds, kicks, bans, roles, topics) per account: each one is
    # told to a whole room, so a burst, then per minute.
    membership_burst: int = Field(30, ge=1)
    membership_per_min: float = Field(60.0, gt=0)

    # GET /metrics answers only when this is set, and only to `Authorization: Bearer <it>`.
    metrics_token: str = ""
    log_format: LogFormat = "text"

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: str) -> str:
        # A short token could be guessed; a space or a non-ASCII one cannot be sent as is.
        if value and not re.fullmatch(rf"[\x21-\x7e]{{{MIN_METRICS_TOKEN_CHARS},}}", value):
            raise ValueError(
                f"must be at least {MIN_METRICS_TOKEN_CHARS} printable ASCII characters, "
                "without spaces"
            )
        return value

    @cached_property
    def async_database_url(self) -> str:
        """The database URL with the async driver this app uses for its scheme."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'chat.db').resolve()}"
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise SettingsError(f"CHAT_DATABASE_URL is not a URL: {url!r}")
        drivers = {
            "sqlite": "sqlite+aiosqlite",
            "postgres": "postgresql+asyncpg",
            "postgresql": "postgresql+asyncpg",
        }
        return f"{drivers.get(scheme, scheme)}://{rest}"

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")

    def signing_key(self) -> str:
        """The JWT key: the configured one, or one generated once and kept in the data dir."""
        key = self.secret_key or _load_or_create_secret(self.data_dir / SECRET_KEY_FILE)
        if len(key) < MIN_SECRET_KEY_CHARS or key.lower() in PLACEHOLDER_SECRETS:
            raise SettingsError(
                f"CHAT_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} random characters"
            )
        return key


def _load_or_create_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    # link() publishes the complete file or fails if another worker won the race,
    # so no process ever reads a half-written key.
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
