"""Sharing the workers between tenants: the fairest job first, per-tenant running limits and quotas."""

from __future__ import annotations

import pytest

from core.errors import QuotaExceeded
from core.services import base_models, jobs, tenants
from core.tables import Dataset, Job


@pytest.fixture
def submit(db, settings):
    """``submit(tenant_name, n)``: queue n tiny jobs for a tenant; return their ids, oldest first."""
    made: dict[str, tuple[str, str]] = {}

    def submit(name: str, n: int = 1, max_queued: int | None = None) -> list[str]:
        if name not in made:
            tenant = tenants.create(db, name=name)
            model = base_models.create(db, tenant_id=tenant.id, name="dit", family="dit", settings=settings,
                                       location={"kind": "hub", "repo_id": "acme/dit"})
            dataset = Dataset(id=f"ds_{name}", tenant_id=tenant.id, name="d", layout="class_folders", num_images=4,
                              num_classes=2, classes=["a", "b"], stats={}, size_bytes=1,
                              storage_prefix=f"datasets/ds_{name}/")
            db.add(dataset)
            db.commit()
            made[name] = (tenant.id, model.id)
        tenant_id, model_id = made[name]
        return [jobs.create(db, tenant_id=tenant_id, base_model_id=model_id, dataset_id=f"ds_{name}",
                            hyperparameters={"max_steps": 5}, max_queued=max_queued).id for _ in range(n)]

    return submit


def test_a_backlog_does_not_starve_another_tenant(db, submit):
    flood = submit("flood", 5)
    victim = submit("victim", 1)
    order = [jobs.claim_next(db, worker=f"w{i}", max_running=10).id for i in range(3)]
    assert order == [flood[0], victim[0], flood[1]]  # the victim's job goes second, not sixth


def test_one_worker_alternates_between_tenants_with_backlogs(db, submit):
    """The worker is free whenever both wait (nobody has a job running): the tenant served longest
    ago goes first, so a backlog of five does not make the victim wait for all five."""
    flood = submit("flood", 5)
    victim = submit("victim", 2)
    ran = []
    for _ in range(4):
        job = jobs.claim_next(db, worker="w", max_running=10)
        ran.append(job.id)
        jobs.mark_succeeded(db, job_id=job.id, attempt=job.attempts)
    assert ran == [flood[0], victim[0], flood[1], victim[1]]


def test_a_tenant_at_its_running_limit_waits_while_others_run(db, submit):
    flood = submit("flood", 4)
    assert [jobs.claim_next(db, worker="w", max_running=2).id for _ in range(2)] == flood[:2]
    assert jobs.claim_next(db, worker="w", max_running=2) is None  # its third job waits
    victim = submit("victim", 1)
    assert jobs.claim_next(db, worker="w", max_running=2).id == victim[0]
    assert jobs.waiting(db, tenant_id=db.get(Job, flood[0]).tenant_id) == flood[2]
    jobs.mark_succeeded(db, job_id=flood[0], attempt=1)
    assert jobs.claim_next(db, worker="w", max_running=2).id == flood[2]  # a slot freed up


def test_queued_jobs_are_capped_per_tenant(db, submit):
    submit("busy", 3)
    with pytest.raises(QuotaExceeded, match="already has 3 queued jobs") as err:
        submit("busy", 1, max_queued=3)
    assert err.value.retry_after > 0
    assert len(submit("calm", 1, max_queued=3)) == 1  # another tenant is unaffected
