"""Node slots of multi-node jobs (``core.services.gangs``) on PostgreSQL and SQLite: each open slot goes to
one joiner, nothing joins a closed gang or an attempt that ended, and the reaper's sweep leaves no
rows of ended attempts. Also where the API places a job's GPUs (``jobs.placement``)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from core.db import make_engine, make_sessionmaker
from core.errors import InvalidError
from core.services import gangs, jobs
from core.tables import Job, JobNode, Tenant, utcnow
from migrations import upgrade


@pytest.fixture(params=["postgresql", "sqlite"])
def sessions(request, make_pg_database, tmp_path):
    url = make_pg_database() if request.param == "postgresql" else f"sqlite:///{tmp_path / 'g.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _running_job(session, job_id: str = "job_1", attempts: int = 1) -> None:
    if session.get(Tenant, "ten_1") is None:
        session.add(Tenant(id="ten_1", name="acme"))
        session.commit()
    session.add(Job(id=job_id, tenant_id="ten_1", method="difftune", hyperparameters={}, status="running",
                    attempts=attempts, resources={"gpus": 3, "nodes": 3}))
    session.commit()


def test_each_open_slot_goes_to_one_joiner_until_the_gang_closes(sessions):
    with sessions() as session:
        _running_job(session)
        gangs.form(session, job_id="job_1", attempt=1, nodes=3, worker="a", address="10.0.0.1",
                   rendezvous={"endpoint": "10.0.0.1:29400"})
    results: list = []

    def joiner(name: str) -> None:
        with sessions() as session:
            results.append(gangs.join(session, job_id="job_1", attempt=1, worker=name, address=name))

    threads = [threading.Thread(target=joiner, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = sorted(r[0] for r in results if r is not None)
    assert claimed == [1, 2] and results.count(None) == 2  # four joiners, two slots
    assert all(r[1] == {"endpoint": "10.0.0.1:29400"} for r in results if r is not None)
    with sessions() as session:
        assert gangs.join(session, job_id="job_1", attempt=1, worker="late", address="x") is None
        assert gangs.join(session, job_id="job_1", attempt=2, worker="other", address="x") is None
        assert gangs.beat(session, job_id="job_1", attempt=1, node=1, status=gangs.LEAVING)
        slots = gangs.close(session, job_id="job_1", attempt=1)
        assert [(s.node, s.status) for s in slots] == [(0, "joined"), (1, "leaving"), (2, "joined")]
        assert gangs.record_outcome(session, job_id="job_1", attempt=1, outcome={"step": 6, "stopped": False})
        assert gangs.members(session, job_id="job_1", attempt=1)[0].outcome == {"step": 6, "stopped": False}
        gangs.disband(session, job_id="job_1", attempt=1)
        assert not gangs.beat(session, job_id="job_1", attempt=1, node=2)  # a joined host learns the gang ended


def test_a_closed_gang_takes_no_joiner_and_stale_hosts_are_found(sessions):
    with sessions() as session:
        _running_job(session)
        gangs.form(session, job_id="job_1", attempt=1, nodes=2, worker="a", address="a", rendezvous={})
        assert [s.status for s in gangs.close(session, job_id="job_1", attempt=1)] == ["joined", "closed"]
        assert gangs.join(session, job_id="job_1", attempt=1, worker="b", address="b") is None
        gangs.form(session, job_id="job_1", attempt=1, nodes=2, worker="a", address="a", rendezvous={})
        assert gangs.join(session, job_id="job_1", attempt=1, worker="b", address="b")[0] == 1
        slots = gangs.members(session, job_id="job_1", attempt=1)
        assert gangs.stale(slots, older_than=timedelta(seconds=30)) == []
        slots[1].heartbeat_at = utcnow() - timedelta(seconds=60)
        assert [s.node for s in gangs.stale(slots, older_than=timedelta(seconds=30))] == [1]


def test_sweep_removes_the_slots_of_attempts_that_ended(sessions):
    with sessions() as session:
        for job_id in ("job_live", "job_failed", "job_requeued"):
            _running_job(session, job_id)
            gangs.form(session, job_id=job_id, attempt=1, nodes=2, worker="a", address="a", rendezvous={})
        session.query(Job).filter(Job.id == "job_failed").update({"status": "failed"})
        session.query(Job).filter(Job.id == "job_requeued").update({"attempts": 2})  # claimed again
        session.commit()
        assert gangs.sweep(session) == 4
        assert {row.job_id for row in session.query(JobNode)} == {"job_live"}
        assert gangs.join(session, job_id="job_failed", attempt=1, worker="b", address="b") is None


@pytest.mark.parametrize(("gpus", "nodes", "expected"), [
    (1, None, 1), (8, None, 1), (16, None, 2), (2, 2, 2), (4, 1, 1), (6, 3, 3),
])
def test_placement(gpus, nodes, expected):
    assert jobs.placement(gpus, nodes, worker_gpus=8) == expected


@pytest.mark.parametrize(("gpus", "nodes", "worker_gpus", "field", "words"), [
    (12, None, 8, "resources.gpus", "multiple of 8"),
    (4, 3, 8, "resources.nodes", "split evenly over 3"),
    (2, 4, 8, "resources.nodes", "split evenly over 4"),
    (4, 1, 2, "resources.nodes", "at least 2 nodes"),
])
def test_bad_placement_names_the_field(gpus, nodes, worker_gpus, field, words):
    with pytest.raises(InvalidError) as err:
        jobs.placement(gpus, nodes, worker_gpus=worker_gpus)
    assert err.value.errors[0]["field"] == field and words in str(err.value)
