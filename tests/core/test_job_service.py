"""Job lifecycle on PostgreSQL: claim once, progress, cancel, terminal states, stale requeue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from core.errors import ConflictError, InvalidError, NotFoundError
from core.services import base_models, job_events, jobs, outputs, tenants
from core.tables import Dataset, Job, utcnow


@pytest.fixture
def tenant(db):
    return tenants.create(db, name="acme")


@pytest.fixture
def job(db, tenant, settings):
    model = base_models.create(
        db, tenant_id=tenant.id, name="dit", family="dit", location={"kind": "local", "path": "/m"},
        settings=settings,
    )
    dataset = Dataset(
        id="ds_1",
        tenant_id=tenant.id,
        name="d",
        layout="class_folders",
        num_images=4,
        num_classes=2,
        classes=["a", "b"],
        stats={},
        size_bytes=1,
        storage_prefix="datasets/ds_1/",
    )
    db.add(dataset)
    db.commit()
    return jobs.create(
        db, tenant_id=tenant.id, base_model_id=model.id, dataset_id="ds_1", hyperparameters={"max_steps": 5}
    )


def statuses(db, job_id):
    return [e.message for e in job_events.list_page(db, job_id=job_id, limit=100).data]


def test_create_fills_defaults_and_queues(job):
    assert job.id.startswith("job_") and job.status == "queued"
    assert job.method == "difftune" and job.total_steps == 5 and job.hyperparameters["bank_share"] == 0.2


def test_create_checks_labels_against_dataset_classes(db, job):
    with pytest.raises(InvalidError) as err:
        jobs.create(
            db,
            tenant_id=job.tenant_id,
            base_model_id=job.base_model_id,
            dataset_id="ds_1",
            validation_labels=[0, 5],
        )
    assert err.value.errors[0]["field"] == "validation_labels"


def test_claim_happens_once(db, job):
    claimed = jobs.claim(db, job_id=job.id, worker="w1")
    assert claimed.status == "running" and claimed.attempts == 1 and claimed.heartbeat_at is not None
    assert jobs.claim(db, job_id=job.id, worker="w2") is None
    assert db.get(Job, job.id, populate_existing=True).worker == "w1"


def test_progress_and_success(db, job):
    jobs.claim(db, job_id=job.id, worker="w1")
    status = jobs.update_progress(
        db, job_id=job.id, attempt=1, step=3, eta_seconds=20, metrics={"loss": 0.5}, message="step 3"
    )
    assert status == "running"
    row = db.get(Job, job.id, populate_existing=True)
    assert (row.step, row.metrics) == (3, {"loss": 0.5}) and row.eta_at > utcnow()
    assert jobs.mark_succeeded(db, job_id=job.id, attempt=1, step=6)
    assert db.get(Job, job.id, populate_existing=True).step == 6  # the final step, not the last throttled write
    assert statuses(db, job.id) == ["job queued", "claimed by w1", "step 3", "job succeeded"]


def test_terminal_states_never_change(db, job):
    jobs.claim(db, job_id=job.id, worker="w1")
    assert jobs.mark_failed(db, job_id=job.id, error="CUDA out of memory")
    assert not jobs.mark_succeeded(db, job_id=job.id, attempt=1)
    assert not jobs.mark_cancelled(db, job_id=job.id)
    assert jobs.update_progress(db, job_id=job.id, attempt=1, step=4) is None  # no lease on an ended job
    with pytest.raises(ConflictError):
        jobs.cancel(db, tenant_id=job.tenant_id, job_id=job.id)
    row = db.get(Job, job.id, populate_existing=True)
    assert (row.status, row.error, row.step) == ("failed", "CUDA out of memory", 0)


def test_cancel_queued_job_is_immediate_and_blocks_claims(db, job):
    assert jobs.cancel(db, tenant_id=job.tenant_id, job_id=job.id).status == "cancelled"
    assert jobs.claim(db, job_id=job.id, worker="w1") is None


def test_cancel_running_job_asks_the_worker(db, job):
    jobs.claim(db, job_id=job.id, worker="w1")
    assert jobs.cancel(db, tenant_id=job.tenant_id, job_id=job.id).status == "cancelling"
    assert jobs.heartbeat(db, job_id=job.id, attempt=1) == "cancelling"
    assert jobs.mark_cancelled(db, job_id=job.id, attempt=1, step=4)
    assert db.get(Job, job.id, populate_existing=True).step == 4  # where it stopped, not a stale step
    with pytest.raises(ConflictError, match="already cancelled"):  # as the docs say: 409 when finished
        jobs.cancel(db, tenant_id=job.tenant_id, job_id=job.id)


def test_other_tenant_cannot_see_the_job(db, job):
    other = tenants.create(db, name="globex")
    with pytest.raises(NotFoundError):
        jobs.get(db, tenant_id=other.id, job_id=job.id)


def _age_heartbeat(db, job_id, minutes):
    db.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(minutes=minutes)))
    db.commit()


def test_requeue_stale_requeues_then_gives_up(db, job):
    jobs.claim(db, job_id=job.id, worker="w1")
    assert jobs.requeue_stale(db, older_than=timedelta(minutes=5)) == []  # fresh heartbeat
    _age_heartbeat(db, job.id, 10)
    assert jobs.requeue_stale(db, older_than=timedelta(minutes=5), max_attempts=2) == [job.id]
    assert jobs.claim(db, job_id=job.id, worker="w2").attempts == 2
    _age_heartbeat(db, job.id, 10)
    assert jobs.requeue_stale(db, older_than=timedelta(minutes=5), max_attempts=2) == []
    row = db.get(Job, job.id, populate_existing=True)
    assert row.status == "failed" and "worker lost 2 times" in row.error


def test_stale_cancelling_job_ends_cancelled(db, job):
    jobs.claim(db, job_id=job.id, worker="w1")
    jobs.cancel(db, tenant_id=job.tenant_id, job_id=job.id)
    _age_heartbeat(db, job.id, 10)
    assert jobs.requeue_stale(db, older_than=timedelta(minutes=5)) == []
    assert db.get(Job, job.id, populate_existing=True).status == "cancelled"


def test_outputs_are_recorded_once_per_step(db, job):
    outputs.create_checkpoint(db, job_id=job.id, step=100, metrics={"loss": 1.0})
    again = outputs.create_checkpoint(db, job_id=job.id, step=100, metrics={"loss": 0.9})
    outputs.create_sample(db, job_id=job.id, step=100)
    db.commit()
    checkpoints = outputs.list_checkpoints(db, job_id=job.id).data
    assert [(c.id, c.metrics) for c in checkpoints] == [(again.id, {"loss": 0.9})]
    assert checkpoints[0].storage_prefix == f"jobs/{job.id}/checkpoints/step_0000100/"
    assert (
        outputs.list_samples(db, job_id=job.id).data[0].storage_key
        == f"jobs/{job.id}/samples/step_0000100.png"
    )


def test_a_replaced_attempt_writes_nothing(db, job):
    """The fence: once the job was requeued and claimed again, the first attempt's heartbeat,
    progress, events, output rows and final status are all refused."""
    jobs.claim(db, job_id=job.id, worker="w1")
    _age_heartbeat(db, job.id, 10)
    assert jobs.requeue_stale(db, older_than=timedelta(minutes=5)) == [job.id]
    assert jobs.claim(db, job_id=job.id, worker="w2").attempts == 2
    assert jobs.update_progress(db, job_id=job.id, attempt=2, step=2, message="step 2 of attempt 2") == "running"
    before = statuses(db, job.id)

    assert jobs.heartbeat(db, job_id=job.id, attempt=1) is None
    assert jobs.update_progress(db, job_id=job.id, attempt=1, step=50, message="step 50 of attempt 1") is None
    assert jobs.record_event(db, job_id=job.id, attempt=1, message="hello from attempt 1") is None
    assert not jobs.release(db, job_id=job.id, attempt=1, reason="attempt 1 gives up")
    assert not jobs.mark_succeeded(db, job_id=job.id, attempt=1, step=50)
    assert not jobs.mark_failed(db, job_id=job.id, attempt=1, error="attempt 1 failed")
    assert not jobs.mark_cancelled(db, job_id=job.id, attempt=1)
    row = db.get(Job, job.id, populate_existing=True)
    assert (row.status, row.step, row.worker, row.error) == ("running", 2, "w2", None)
    assert statuses(db, job.id) == before

    assert jobs.mark_succeeded(db, job_id=job.id, attempt=2, step=6)
    assert db.get(Job, job.id, populate_existing=True).status == "succeeded"


def test_requeue_spares_a_job_that_beat_meanwhile(db, job):
    """The reaper's UPDATE re-checks staleness: a heartbeat between its SELECT and UPDATE wins."""
    jobs.claim(db, job_id=job.id, worker="w1")
    _age_heartbeat(db, job.id, 10)
    real_execute = db.execute
    beaten = []

    def execute(stmt, *args, **kwargs):
        if not beaten and getattr(stmt, "is_update", False):
            beaten.append(True)
            assert jobs.heartbeat(db, job_id=job.id, attempt=1) == "running"
        return real_execute(stmt, *args, **kwargs)

    db.execute = execute
    try:
        assert jobs.requeue_stale(db, older_than=timedelta(minutes=5)) == []
    finally:
        del db.execute
    assert db.get(Job, job.id, populate_existing=True).status == "running"
