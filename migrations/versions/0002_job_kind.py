"""job kind: tuning jobs and analysis jobs (the forgetting probe) share the job table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=30), server_default="tune", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("kind")
