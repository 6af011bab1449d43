"""mailbox integrations: Microsoft Graph app registrations (sealed credentials), mailboxes, folder delta links

Revision ID: 0100_integrations
Revises: 0007_encryption
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0100_integrations"
down_revision = "0007_encryption"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("authority_host", sa.String(length=512), nullable=False),
        sa.Column("graph_base_url", sa.String(length=512), nullable=False),
        sa.Column("credential_kind", sa.String(length=16), nullable=False),
        sa.Column("sealed_credential", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("integration_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "integration_mailboxes",
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("start_time", _TS, nullable=True),
        sa.Column("folders", _JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_synced_at", _TS, nullable=True),
        sa.Column("published", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "mailbox"),
    )
    op.create_table(
        "integration_folders",
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("folder_id", sa.String(length=512), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("next_link", sa.Text(), nullable=True),
        sa.Column("delta_link", sa.Text(), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "mailbox", "folder_id"),
    )


def downgrade() -> None:
    op.drop_table("integration_folders")
    op.drop_table("integration_mailboxes")
    op.drop_table("integrations")
