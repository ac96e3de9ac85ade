"""A job's metrics history: every logged step recorded (a resumed attempt's steps replace the old ones),
answered whole or averaged into at most ``max_points``, zoomable, and only to the job's tenant."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from core.services import job_metrics
from core.tables import JobMetric


@pytest.fixture
def job(client, auth, base_model, dataset) -> dict:
    body = {"base_model": base_model["id"], "dataset": dataset["id"], "hyperparameters": {"max_steps": 20, "resolution": 16}}
    return client.post("/v1/jobs", headers=auth, json=body).json()


def figures(step: int, **extra) -> dict:
    return {"loss": 1 / step, "loss_target": 2 / step, "loss_bank": 0.5, "learning_rate": 1e-4,
            "images_per_sec": 10.0 + step, "eta_seconds": 3.0, **extra}


def test_every_logged_step_is_a_point_and_a_resumed_step_replaces_the_old(client, auth, other_auth, job, db):
    for step in (10, 20, 30):
        job_metrics.record(db, job_id=job["id"], step=step, figures=figures(step))
    evaluation = {"metric": "canny_f1", "canny_f1": 0.4, "history": [[30, 0.4]]}
    job_metrics.record(db, job_id=job["id"], step=30, figures=figures(30, loss=9.0, evaluation=evaluation))
    db.commit()
    body = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth).json()
    assert (body["object"], body["total_points"], body["downsampled"]) == ("job.metrics", 3, False)
    assert [p["step"] for p in body["data"]] == [10, 20, 30]
    assert body["data"][0] == {"step": 10, "loss": 0.1, "loss_target": 0.2, "loss_bank": 0.5, "learning_rate": 1e-4,
                               "images_per_sec": 20.0}
    assert body["data"][2]["loss"] == 9.0 and body["evaluation"] == evaluation  # the second attempt's step 30
    assert client.get(f"/v1/jobs/{job['id']}/metrics", headers=other_auth).status_code == 404
    bad = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth, params={"from_step": 30, "to_step": 10})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "to_step"
    assert client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth, params={"max_points": 1}).status_code == 422


def test_a_long_series_is_averaged_into_at_most_max_points_and_can_be_zoomed(client, auth, job, db):
    rows = [{"job_id": job["id"], "step": s, "loss": float(s), "loss_target": float(s), "loss_bank": None,
             "learning_rate": 1e-4, "images_per_sec": 5.0} for s in range(1, 5001)]
    db.execute(insert(JobMetric), rows)
    db.commit()
    body = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth, params={"max_points": 100}).json()
    assert body["total_points"] == 5000 and body["downsampled"] and len(body["data"]) == 100
    first, last = body["data"][0], body["data"][-1]
    assert first["step"] == 50 and first["loss"] == pytest.approx(25.5)  # steps 1..50: mean 25.5
    assert last["step"] == 5000 and last["loss_bank"] is None and last["images_per_sec"] == 5.0
    assert [p["step"] for p in body["data"]] == sorted(p["step"] for p in body["data"])
    zoom = client.get(f"/v1/jobs/{job['id']}/metrics", headers=auth,
                      params={"from_step": 101, "to_step": 150, "max_points": 100}).json()
    assert not zoom["downsampled"] and [p["step"] for p in zoom["data"]] == list(range(101, 151))
