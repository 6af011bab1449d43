"""streams: cursor and options on streams, stream entries, exceptions, routing positions

Revision ID: 0004
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("streams") as batch:
        batch.add_column(sa.Column("title", sa.String(length=256), nullable=False, server_default=""))
        batch.add_column(sa.Column("description", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("deliver_all_filtered", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("delivery", sa.String(length=16), nullable=False, server_default="fetch"))
        batch.add_column(sa.Column("cursor", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reset_from", _TS, nullable=True))
    op.create_index("ix_streams_dataset_name", "streams", ["dataset_id", "name"])
    op.create_table(
        "stream_entries",
        sa.Column("stream_id", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("uid", sa.String(length=1100), nullable=False),
        sa.Column("source_id", sa.String(length=16), nullable=False),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("passes_filter", sa.Boolean(), nullable=False),
        sa.Column("probabilities", _JSON, nullable=False),
        sa.Column("qualifies", sa.Boolean(), nullable=False),
        sa.Column("labels", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "seq"),
        sa.UniqueConstraint("stream_id", "uid", name="uq_stream_entries_uid"),
    )
    op.create_table(
        "stream_exceptions",
        sa.Column("stream_id", sa.String(length=16), nullable=False),
        sa.Column("uid", sa.String(length=1100), nullable=False),
        sa.Column("exception_type", sa.String(length=256), nullable=False),
        sa.Column("reported_at", _TS, nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "uid"),
    )
    op.create_table(
        "stream_routing",
        sa.Column("stream_id", sa.String(length=16), nullable=False),
        sa.Column("pushed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream_id"),
    )


def downgrade() -> None:
    op.drop_table("stream_routing")
    op.drop_table("stream_exceptions")
    op.drop_table("stream_entries")
    op.drop_index("ix_streams_dataset_name", table_name="streams")
    with op.batch_alter_table("streams") as batch:
        for column in ("reset_from", "last_seq", "cursor", "delivery", "deliver_all_filtered", "description", "title"):
            batch.drop_column(column)
