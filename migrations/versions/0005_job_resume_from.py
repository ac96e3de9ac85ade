"""job resume_from: the checkpoint ({job_id, step}) of another job a job starts from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("resume_from", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("resume_from")
