"""encryption at rest: data keys wrapped by the master key, and key rotation progress

Revision ID: 0007_encryption
Revises: 0007_stream_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_encryption"
down_revision = "0007_stream_index"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("master_key_id", sa.String(length=32), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("destroyed_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("owner", "version"),
    )
    op.create_table(
        "key_rotations",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("owner", "version"),
    )


def downgrade() -> None:
    op.drop_table("key_rotations")
    op.drop_table("data_keys")
