"""base model resolutions: the sizes a loaded base model trains at (any-size families: SDXL, SD3, Flux)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("base_model") as batch:
        batch.add_column(sa.Column("resolutions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("base_model") as batch:
        batch.drop_column("resolutions")
