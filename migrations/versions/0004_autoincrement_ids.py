"""Ids never reused, tokens tied to their account's key, rooms know their creator.

SQLite hands the id of a deleted row to the next insert unless the table is declared
AUTOINCREMENT, which only a rebuild of the table can add. Every existing account gets
a random token key: tokens issued before this migration are refused, and their users
sign in again.

Revision ID: 0004_autoincrement
Revises: 0003_skeleton
Create Date: 2026-12-01
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_autoincrement"
down_revision: str | None = "0003_skeleton"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOKEN_KEY_BYTES = 16


def _recreate() -> str:
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    op.add_column("users", sa.Column("token_key", sa.String(length=32), nullable=True))
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("token_key", sa.String))
    conn = op.get_bind()
    for user_id in conn.scalars(sa.select(users.c.id)).all():
        conn.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(token_key=secrets.token_urlsafe(TOKEN_KEY_BYTES))
        )
    with op.batch_alter_table(
        "users", recreate=_recreate(), table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.alter_column("token_key", existing_type=sa.String(length=32), nullable=False)
    with op.batch_alter_table(
        "rooms", recreate=_recreate(), table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.add_column(sa.Column("created_by", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_rooms_created_by_users", "users", ["created_by"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_rooms_created_by", ["created_by"])


def downgrade() -> None:
    with op.batch_alter_table("rooms", recreate=_recreate()) as batch:
        batch.drop_index("ix_rooms_created_by")
        batch.drop_constraint("fk_rooms_created_by_users", type_="foreignkey")
        batch.drop_column("created_by")
    with op.batch_alter_table("users", recreate=_recreate()) as batch:
        batch.drop_column("token_key")
