"""snapshots: an aggregate's state at a version, so that loading it reads only the events after it

Every robot's advance appends a ``StreamAdvanced`` to its stream, and every command on the stream
replayed all of them: an advance grew slower for as long as the stream lived.

Revision ID: 0102_snapshots
Revises: 0101_streams_perf
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0102_snapshots"
down_revision = "0101_streams_perf"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("aggregate_id", sa.String(1100), primary_key=True),
        sa.Column("aggregate_version", sa.Integer, nullable=False),
        sa.Column("state", _JSON, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("snapshots")
