"""The metrics history on SQLite (embedded mode): the upsert and the bucketed series work there too."""

from __future__ import annotations

from core.db import make_engine, make_sessionmaker
from core.services import job_metrics
from core.tables import Job, Tenant
from migrations import upgrade


def test_record_replaces_a_step_and_series_averages_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    with sessions() as session:
        session.add(Tenant(id="ten_1", name="acme"))
        session.commit()
        session.add(Job(id="job_1", tenant_id="ten_1", method="difftune", hyperparameters={}))
        session.commit()
        for step in range(1, 101):
            job_metrics.record(session, job_id="job_1", step=step, figures={"loss": float(step), "loss_bank": None})
        job_metrics.record(session, job_id="job_1", step=100, figures={"loss": 0.0, "evaluation": {"fd": 3.0}})
        session.commit()
        whole = job_metrics.series(session, job_id="job_1", max_points=1000)
        assert whole["total_points"] == 100 and whole["data"][-1]["loss"] == 0.0 and whole["evaluation"] == {"fd": 3.0}
        coarse = job_metrics.series(session, job_id="job_1", max_points=10)
        assert coarse["downsampled"] and [p["step"] for p in coarse["data"]] == list(range(10, 101, 10))
        assert coarse["data"][0]["loss"] == 5.5 and coarse["data"][0]["loss_bank"] is None
        # an attempt that does not hold the job (here: queued, attempts 0) writes nothing
        assert not job_metrics.record(session, job_id="job_1", step=101, figures={"loss": 1.0}, attempt=0)
        assert job_metrics.series(session, job_id="job_1")["total_points"] == 100
