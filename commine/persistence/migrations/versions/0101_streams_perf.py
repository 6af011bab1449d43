"""streams: entries no longer copy the pinned version's probabilities

An entry past the cursor always holds the newest probabilities of its message under the pinned
version, which the ``predictions`` table holds too; re-evaluation and the threshold preview read
them from there. Writing them into every entry of every stream (one JSON document per message per
stream, qualifying or not) was most of what routing wrote. The column stays, nullable, for rows
written before this revision.

Revision ID: 0101_streams_perf
Revises: 0100_integrations
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0101_streams_perf"
down_revision = "0100_integrations"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("stream_entries") as batch:
        batch.alter_column("probabilities", existing_type=_JSON, nullable=True)


def downgrade() -> None:
    op.execute("UPDATE stream_entries SET probabilities = '{}' WHERE probabilities IS NULL")
    with op.batch_alter_table("stream_entries") as batch:
        batch.alter_column("probabilities", existing_type=_JSON, nullable=False)
