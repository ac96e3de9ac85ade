"""job config contract: tuning jobs store the complete TrainConfig they run; base models record their image size

Before 0003 a tuning job's hyperparameters held the TrainConfig defaults ``family: dit`` and
``base_model: ""`` whatever the base model was, and its validation prompts only in their own
column; the worker patched all three in at run time. Now the stored hyperparameters are what the
worker runs, so existing tuning jobs get their base model's family, its id and their prompts.
``base_model.image_size`` (filled by the load check) lets ``POST /v1/jobs`` refuse a resolution the
base model cannot train at.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The base-model families as the API named them when this migration was written (frozen here:
# a migration must not change with later registry edits).
API_TO_CONFIG_FAMILY = {"dit": "dit", "sd": "sd", "sd-controlnet": "controlnet"}

job = sa.table("job", sa.column("id", sa.String), sa.column("kind", sa.String),
               sa.column("base_model_id", sa.String), sa.column("hyperparameters", sa.JSON),
               sa.column("validation_prompts", sa.JSON))
base_model = sa.table("base_model", sa.column("id", sa.String), sa.column("family", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("base_model") as batch:
        batch.add_column(sa.Column("image_size", sa.Integer(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(job.c.id, job.c.hyperparameters, job.c.validation_prompts, job.c.base_model_id, base_model.c.family)
        .select_from(job.outerjoin(base_model, job.c.base_model_id == base_model.c.id))
        .where(job.c.kind == "tune")
    ).all()
    for job_id, hyper, prompts, base_model_id, family in rows:
        hyper = dict(hyper or {})
        if family in API_TO_CONFIG_FAMILY:
            hyper["family"] = API_TO_CONFIG_FAMILY[family]
        hyper["base_model"] = base_model_id or hyper.get("base_model", "")
        if prompts and not hyper.get("validation_prompts"):
            hyper["validation_prompts"] = list(prompts)
        conn.execute(sa.update(job).where(job.c.id == job_id).values(hyperparameters=hyper))


def downgrade() -> None:
    """Drop the image size; the jobs' hyperparameters stay (the older worker overwrote those fields itself)."""
    with op.batch_alter_table("base_model") as batch:
        batch.drop_column("image_size")
