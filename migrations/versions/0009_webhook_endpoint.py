"""webhook_endpoint: a tenant-wide webhook endpoint; which target each delivery goes to

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name=op.f("fk_webhook_endpoint_tenant_id_tenant"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_webhook_endpoint")),
    )
    with op.batch_alter_table("webhook_delivery") as batch:  # earlier deliveries all went to a job's webhook
        batch.add_column(sa.Column("target", sa.String(length=10), server_default="job", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery") as batch:
        batch.drop_column("target")
    op.drop_table("webhook_endpoint")
