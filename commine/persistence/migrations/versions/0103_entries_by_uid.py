"""streams: an entry is found by its message first, then its stream

The uniqueness of (stream, message) was an index on ``(stream_id, uid)``. Routing asks, for each
prediction, which streams already hold the message: PostgreSQL answered ``stream_id IN (...) AND
uid IN (...)`` by reading every entry of those streams (55 ms for 300,000 entries, growing with
the streams), and a deleted message's entries (``uid = ...``) by a scan of the whole table. The
same uniqueness on ``(uid, stream_id)`` answers both with one probe per message.

Revision ID: 0103_entries_by_uid
Revises: 0102_snapshots
"""

from alembic import op

revision = "0103_entries_by_uid"
down_revision = "0102_snapshots"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stream_entries") as batch:
        batch.drop_constraint("uq_stream_entries_uid", type_="unique")
        batch.create_unique_constraint("uq_stream_entries_uid", ["uid", "stream_id"])


def downgrade() -> None:
    with op.batch_alter_table("stream_entries") as batch:
        batch.drop_constraint("uq_stream_entries_uid", type_="unique")
        batch.create_unique_constraint("uq_stream_entries_uid", ["stream_id", "uid"])
