"""Settings from `CHAT_*` variables: the signing key, database URLs and allowed origins."""

import os
import secrets
import stat
from pathlib import Path

import pytest

from chat.settings import SECRET_KEY_FILE, Settings, SettingsError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `CHAT_*` variable of the surrounding shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("CHAT_"):
            monkeypatch.delenv(name)


def test_generated_secret_key_is_private_and_kept(tmp_path: Path) -> None:
    """Without CHAT_SECRET_KEY a key is generated once into the data dir, mode 0600, and reused."""
    data_dir = tmp_path / "data"
    key = Settings(data_dir=data_dir).signing_key()
    path = data_dir / SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32
    assert path.read_text().strip() == key
    assert Settings(data_dir=data_dir).signing_key() == key
    assert Settings(data_dir=tmp_path / "other").signing_key() != key
    assert [p.name for p in data_dir.iterdir()] == [SECRET_KEY_FILE]


def test_generated_secret_key_through_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHAT_DATA_DIR decides where the generated key lives."""
    monkeypatch.setenv("CHAT_DATA_DIR", str(tmp_path))
    key = Settings().signing_key()
    assert (tmp_path / SECRET_KEY_FILE).read_text().strip() == key


def test_configured_secret_key_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strong CHAT_SECRET_KEY is used as is, and no key file is written."""
    key = secrets.token_urlsafe(48)
    monkeypatch.setenv("CHAT_SECRET_KEY", key)
    monkeypatch.setenv("CHAT_DATA_DIR", str(tmp_path))
    assert Settings().signing_key() == key
    assert not (tmp_path / SECRET_KEY_FILE).exists()


@pytest.mark.parametrize(
    "key", ["tooshort", "x" * 31, "secret", "changeme", "CHANGEME", "your-secret-key", "dev"]
)
def test_weak_secret_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """A short or placeholder CHAT_SECRET_KEY raises SettingsError."""
    monkeypatch.setenv("CHAT_SECRET_KEY", key)
    monkeypatch.setenv("CHAT_DATA_DIR", str(tmp_path))
    with pytest.raises(SettingsError):
        Settings().signing_key()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///chat.db", "sqlite+aiosqlite:///chat.db"),
        ("sqlite:////var/lib/chat/chat.db", "sqlite+aiosqlite:////var/lib/chat/chat.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@db:5432/chat", "postgresql+asyncpg://u:p@db:5432/chat"),
        ("postgres://u:p@db/chat", "postgresql+asyncpg://u:p@db/chat"),
        ("postgresql+asyncpg://db/chat", "postgresql+asyncpg://db/chat"),
    ],
)
def test_database_url_gets_async_driver(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    """`sqlite://` maps to aiosqlite and `postgresql://` (or `postgres://`) to asyncpg."""
    monkeypatch.setenv("CHAT_DATABASE_URL", url)
    settings = Settings()
    assert settings.async_database_url == expected
    assert settings.is_sqlite == expected.startswith("sqlite")


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    """Without CHAT_DATABASE_URL the database is the SQLite file `chat.db` in the data dir."""
    url = Settings(data_dir=tmp_path).async_database_url
    assert url == f"sqlite+aiosqlite:///{(tmp_path / 'chat.db').resolve()}"


def test_malformed_database_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CHAT_DATABASE_URL that is no URL raises SettingsError with a one-line message."""
    monkeypatch.setenv("CHAT_DATABASE_URL", "nonsense")
    with pytest.raises(SettingsError) as caught:
        Settings().async_database_url  # noqa: B018
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://a.example,https://b.example", ["https://a.example", "https://b.example"]),
        (
            " https://a.example/ , http://b.example:8080 ,",
            ["https://a.example", "http://b.example:8080"],
        ),
        ("https://only.example", ["https://only.example"]),
        ("", []),
    ],
)
def test_allowed_origins_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    """CHAT_ALLOWED_ORIGINS is a comma-separated list of origins, spaces and trailing / ignored."""
    monkeypatch.setenv("CHAT_ALLOWED_ORIGINS", value)
    assert Settings().allowed_origins == expected


def test_allowed_origins_default_to_none_extra() -> None:
    """Without CHAT_ALLOWED_ORIGINS no extra origin is allowed."""
    assert Settings().allowed_origins == []
