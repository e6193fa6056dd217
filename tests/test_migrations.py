"""Alembic migrations: the migrated schema is exactly the models' schema, both ways."""

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from chat import search
from chat.db import alembic_config, migrate
from chat.models import Base
from chat.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key=secrets.token_urlsafe(48))


@pytest.fixture
def sync_engine(settings: Settings) -> Iterator[sa.Engine]:
    """A plain (sync) SQLite engine on the database file the settings name."""
    engine = sa.create_engine(f"sqlite:///{settings.data_dir / 'chat.db'}")
    yield engine
    engine.dispose()


def schema_diff(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": False,
                # The search indexes are the migrations' alone (see chat.search.in_models).
                "include_name": search.in_models,
            },
        )
        return list(compare_metadata(context, Base.metadata))


def room_names(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.text("SELECT name FROM rooms ORDER BY id")))


def test_upgrade_head_matches_models(settings: Settings, sync_engine: sa.Engine) -> None:
    """`upgrade head` on an empty SQLite database yields exactly the models' schema."""
    # The comparison is live: an empty database differs from the models.
    assert schema_diff(sync_engine)
    migrate(settings)
    assert schema_diff(sync_engine) == []
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    with sync_engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head


def test_upgrade_creates_general_room(settings: Settings, sync_engine: sa.Engine) -> None:
    """After migrating, the `general` room exists, once, even after migrating again."""
    migrate(settings)
    migrate(settings)
    assert room_names(sync_engine) == ["general"]


def test_downgrade_then_upgrade(settings: Settings, sync_engine: sa.Engine) -> None:
    """`downgrade base` removes every table, and `upgrade head` afterwards rebuilds them."""
    migrate(settings)
    command.downgrade(alembic_config(settings), "base")
    tables = set(sa.inspect(sync_engine).get_table_names())
    assert tables <= {"alembic_version"}
    migrate(settings)
    assert schema_diff(sync_engine) == []
    assert room_names(sync_engine) == ["general"]
