"""A job's metrics history: the figures of every logged step, and the series a chart asks for.

A chart needs about a thousand points, not a hundred thousand: ``series`` averages consecutive steps
into at most ``max_points`` buckets in the database (one GROUP BY over the job's rows), so a long job's
curve answers as fast as a short one's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core.enums import JobStatus
from core.tables import Job, JobMetric, utcnow

FIGURES = ("loss", "loss_target", "loss_bank", "learning_rate", "images_per_sec")


def record(session: Session, *, job_id: str, step: int, figures: dict[str, Any], attempt: int | None = None) -> bool:
    """Stage the figures of ``step`` (the trainer's progress fields; others are ignored), replacing what
    an earlier attempt logged at that step; with ``attempt``, only while that attempt holds the job. One
    statement that locks no job row (its fence is a plain EXISTS), so a worker paused mid-write never
    blocks the requeue of its job. The caller commits. Returns whether a row was written."""
    values = {"job_id": job_id, "step": step, "evaluation": figures.get("evaluation") or None,
              **{name: _number(figures.get(name)) for name in FIGURES}, "created_at": utcnow()}
    held = [Job.id == job_id] + ([Job.status.in_(JobStatus.on_worker()), Job.attempts == attempt]
                                 if attempt is not None else [])
    columns = JobMetric.__table__.c
    source = select(*[literal(v, type_=columns[k].type) for k, v in values.items()]).where(exists().where(*held))
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(JobMetric).from_select(list(values), source)
    stmt = stmt.on_conflict_do_update(index_elements=["job_id", "step"],
                                      set_={k: stmt.excluded[k] for k in values if k not in ("job_id", "step")})
    return session.execute(stmt).rowcount == 1


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None  # NaN: none


def series(session: Session, *, job_id: str, max_points: int = 1000, from_step: int | None = None,
           to_step: int | None = None) -> dict[str, Any]:
    """The job's points between ``from_step`` and ``to_step``: every one when they are at most
    ``max_points``, else means over equal step ranges (each point at its range's last step). Also the
    latest evaluation figures and how many points there are."""
    where = [JobMetric.job_id == job_id]
    if from_step is not None:
        where.append(JobMetric.step >= from_step)
    if to_step is not None:
        where.append(JobMetric.step <= to_step)
    total, low, high = session.execute(
        select(func.count(), func.min(JobMetric.step), func.max(JobMetric.step)).where(*where)).one()
    columns = [getattr(JobMetric, name) for name in FIGURES]
    if total <= max_points:
        rows = session.execute(select(JobMetric.step, *columns).where(*where).order_by(JobMetric.step)).all()
    else:
        bucket = (JobMetric.step - low) * max_points // (high - low + 1)  # 0 .. max_points - 1
        rows = session.execute(select(func.max(JobMetric.step), *[func.avg(c) for c in columns]).where(*where)
                               .group_by(bucket).order_by(func.max(JobMetric.step))).all()
    latest = session.execute(select(JobMetric.evaluation).where(*where, JobMetric.evaluation.is_not(None))
                             .order_by(JobMetric.step.desc()).limit(1)).scalar()
    points = [{"step": int(row[0]), **{name: _number(v) for name, v in zip(FIGURES, row[1:], strict=True)}}
              for row in rows]
    return {"total_points": int(total), "downsampled": total > max_points, "data": points, "evaluation": latest}
