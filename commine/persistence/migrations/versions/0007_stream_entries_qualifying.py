"""streams: a partial index of each stream's qualifying entries, for fetch and the backlog count

Fetch looks for the next ``size`` qualifying entries past the cursor and the backlog counts those
past the cursor; without this index both walk every entry past the cursor, qualifying or not
(most are not, on a stream of a large dataset).

Revision ID: 0007_stream_index
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_stream_index"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_stream_entries_qualifying",
        "stream_entries",
        ["stream_id", "seq"],
        postgresql_where=sa.text("qualifies"),
        sqlite_where=sa.text("qualifies"),
    )


def downgrade() -> None:
    op.drop_index("ix_stream_entries_qualifying", table_name="stream_entries")
