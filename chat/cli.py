"""The `chat` command: serve, migrate, create-admin, create-user, backup."""

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat import accounts, backup, prometheus, wsprotocol
from chat.alerts import Alerts
from chat.broker import check_broker, create_broker
from chat.db import create_engine, migrate, session_factory
from chat.errors import UsernameTaken
from chat.fields import USERNAME_RULE, is_valid_username, password_problem
from chat.logs import log_config
from chat.security import PasswordHasher
from chat.settings import Settings, SettingsError


class CommandError(Exception):
    """Stops the command with this one line."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CHAT_" + str(first["loc"][0]).upper() if first["loc"] else "a CHAT_ setting"
        raise CommandError(f"{name}: {first['msg']}") from None


def _migrate(settings: Settings) -> None:
    try:
        migrate(settings)
    except (SQLAlchemyError, OSError, ImportError) as exc:
        # ImportError: the URL names a database whose driver is not installed.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise CommandError(f"cannot migrate the database: {reason}") from None


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from chat.http_limits import raise_open_files_limit

    settings = _settings()
    if args.workers > 1 and settings.broker_url.startswith("memory:"):
        raise CommandError(
            "--workers > 1 needs a shared broker: set CHAT_BROKER_URL=redis://host:port/db"
        )
    settings.signing_key()  # Creates the key once, before workers race for it.
    raise_open_files_limit(settings.max_connections)
    check_broker(settings.broker_url)
    _migrate(settings)
    metrics_dir = None
    if (settings.metrics_token and args.workers > 1) or prometheus.multiprocess_dir():
        # Each worker keeps its values in files there; the one scraped adds them all up.
        metrics_dir = prometheus.prepare_multiprocess_dir()
    try:
        uvicorn.run(
            "chat.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=log_config(log_format=settings.log_format),
            **uvicorn_options(settings),
        )
    finally:
        if metrics_dir is not None:
            prometheus.remove_multiprocess_dir(metrics_dir)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn must run this app, wherever it is started from."""
    from chat.http_limits import uvicorn_http_options

    return {
        **uvicorn_http_options(settings),
        "ws": wsprotocol.PROTOCOL,
        "ws_max_size": settings.ws_max_frame_bytes,
        "ws_ping_interval": settings.ws_ping_interval_secs,
        "ws_ping_timeout": settings.ws_ping_timeout_secs,
        # Compression costs memory per socket and opens CRIME-style leaks.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": 10,
        # The client address of the per-address limits: X-Forwarded-For counts only when one of
        # these proxies sends it, so that nobody else can pick the address they are limited as.
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
    }


def migrate_command(_args: argparse.Namespace) -> None:
    _migrate(_settings())
    print("database is at the newest schema")


def _new_account(username: str) -> str:
    """The password for a new account named `username`: from a prompt, or from
    CHAT_ADMIN_PASSWORD when not run from a terminal; refused as registration refuses it."""
    if not is_valid_username(username):
        raise CommandError(f"usernames are {USERNAME_RULE}")
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {username}: ")
    else:
        password = os.environ.get("CHAT_ADMIN_PASSWORD", "")
        if not password:
            raise CommandError("set CHAT_ADMIN_PASSWORD when not run from a terminal")
    problem = password_problem(username, password)
    if problem is not None:
        # One line in the command's style: "passwords are ...", no full stop.
        raise CommandError(problem[0].lower() + problem[1:].rstrip("."))
    return password


def create_admin(args: argparse.Namespace) -> None:
    settings = _settings()
    password = _new_account(args.username)
    _migrate(settings)

    async def run() -> bool:
        engine = create_engine(settings)
        try:
            async with session_factory(engine)() as session:
                existed = await accounts.find_by_username(session, args.username) is not None
                await accounts.create_or_promote_admin(session, args.username, password)
                return existed
        finally:
            await engine.dispose()

    try:
        existed = asyncio.run(run())
    except UsernameTaken:
        raise CommandError(f"{args.username} looks like the name of another account") from None
    print(f"{args.username} {'promoted to' if existed else 'created as'} admin")


def create_user(args: argparse.Namespace) -> None:
    """Whatever CHAT_REGISTRATION says: this is how admins make accounts on a closed server."""
    settings = _settings()
    password = _new_account(args.username)
    _migrate(settings)

    async def run() -> bool:
        engine = create_engine(settings)
        hasher = PasswordHasher(1, 1)
        try:
            sessions = session_factory(engine)
            async with sessions() as session:
                user = await accounts.register(
                    session, args.username, password, hasher, admin=args.admin
                )
            await _alert_registered(settings, sessions, args.username)
            return user.is_admin
        finally:
            hasher.close()
            await engine.dispose()

    try:
        is_admin = asyncio.run(run())
    except UsernameTaken:
        raise CommandError(
            f"{args.username} is taken, or looks like another account's name"
        ) from None
    # The first account of a database is its admin, --admin or not.
    print(f"{args.username} created{' as admin' if is_admin else ''}")


async def _alert_registered(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], username: str
) -> None:
    """Admins hear of an account made here as of one made by registering: the alert is
    stored, and pushed live to the servers' admin views when they share a broker."""
    broker = create_broker(settings.broker_url, settings.redis_namespace)
    try:
        await broker.connect(lambda events: None, lambda control: None, lambda: None)
    except (SettingsError, TimeoutError) as exc:
        # The account exists; only the live push is lost, the stored alert is not.
        print(f"warning: the admins' views not told at once: {exc}", file=sys.stderr)
        broker = create_broker("memory://", settings.redis_namespace)
        await broker.connect(lambda events: None, lambda control: None, lambda: None)
    try:

        async def writable() -> bool:
            return True

        alerts = Alerts(sessions, broker.publish_control, writable, settings.alert_window_secs)
        await alerts.raise_now("user_registered", f"{username} created (command line)")
        await alerts.stop()
    finally:
        await broker.disconnect()


def backup_command(args: argparse.Namespace) -> None:
    settings = _settings()
    if not settings.is_sqlite:
        raise CommandError(backup.POSTGRES_POINTER)
    try:
        size = backup.backup_sqlite(settings, args.path, replace=args.force)
    except backup.BackupError as exc:
        raise CommandError(str(exc)) from None
    print(f"backed up the database to {args.path} ({size / 2**20:.1f} MiB)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="chat",
        description="Self-hostable, authenticated, multi-room chat server.",
        epilog="Settings come from CHAT_* environment variables; see the README.",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmd = commands.add_parser("serve", help="apply migrations, then serve")
    cmd.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    cmd.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    cmd.add_argument(
        "--workers", type=int, default=1, help="server processes (default 1; >1 needs Redis)"
    )
    cmd.set_defaults(run=serve)
    cmd = commands.add_parser("migrate", help="apply database migrations")
    cmd.set_defaults(run=migrate_command)
    cmd = commands.add_parser("create-admin", help="create a user or promote it to admin")
    cmd.add_argument("username")
    cmd.set_defaults(run=create_admin)
    cmd = commands.add_parser(
        "create-user", help="create an account, whatever CHAT_REGISTRATION says"
    )
    cmd.add_argument("username")
    cmd.add_argument("--admin", action="store_true", help="make the account an admin")
    cmd.set_defaults(run=create_user)
    cmd = commands.add_parser(
        "backup", help="copy the SQLite database, also while the server runs (PostgreSQL: pg_dump)"
    )
    cmd.add_argument("path", type=Path, help="the file to write; it must not exist yet")
    cmd.add_argument("--force", action="store_true", help="replace the file if it exists")
    cmd.set_defaults(run=backup_command)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (CommandError, SettingsError) as exc:
        print(f"chat: error: {exc}", file=sys.stderr)
        sys.exit(2)
