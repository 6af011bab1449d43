"""model artifacts, embeddings and predictions

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_artifacts",
        sa.Column("artifact_hash", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("artifact_hash"),
    )
    op.create_table(
        "embeddings",
        sa.Column("source_id", sa.String(length=16), nullable=False),
        sa.Column("comment_id", sa.String(length=1024), nullable=False),
        sa.Column("encoder", sa.String(length=32), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "comment_id", "encoder"),
    )
    op.create_table(
        "predictions",
        sa.Column("dataset_id", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=1100), nullable=False),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "model_version", "uid"),
    )


def downgrade() -> None:
    op.drop_table("predictions")
    op.drop_table("embeddings")
    op.drop_table("model_artifacts")
