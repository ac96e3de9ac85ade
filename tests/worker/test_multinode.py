"""Multi-node jobs through the REST API and real ``celery worker`` processes, each playing a host with one
GPU (its own cache folder; gloo on loopback): the worker that claims the job gangs another through a
join task and both run one torchrun job (c10d rendezvous); without enough workers the gang timeout
fails the job cleanly."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from core.storage.keys import checkpoint_prefix
from core.tables import Job, JobNode

from .conftest import start_worker, wait_for, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(settings):
    """Worker hosts of one GPU each: a job of 2 GPUs spans 2 hosts."""
    return settings.model_copy(update={"worker_gpus": 1})


def _host(settings, tmp_path, name: str, **extra: str) -> tuple[subprocess.Popen, object]:
    env = worker_env(settings, DIFFTUNE_CACHE_DIR=str(tmp_path / name), DIFFTUNE_WORKER_GPUS="1",
                     DIFFTUNE_WORKER_ADDRESS="127.0.0.1", **extra)
    log = tmp_path / f"{name}.log"
    return start_worker(env, log, queues="gpu"), log


def _stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _messages(client, auth, job_id: str) -> list[str]:
    return [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events?limit=100", headers=auth).json()["data"]]


def _row(db, job_id: str):
    return lambda: db.get(Job, job_id, populate_existing=True)


def test_a_two_host_job_runs_as_one_torchrun_job(make_job, settings, client, auth, db, storage, tmp_path):
    job = make_job({"resources": {"gpus": 2}})
    assert job["resources"] == {"gpus": 2, "nodes": 2}
    first, first_log = _host(settings, tmp_path, "host_a", DIFFTUNE_GANG_TIMEOUT_S="240")
    second, second_log = _host(settings, tmp_path, "host_b", DIFFTUNE_GANG_TIMEOUT_S="240")
    row = _row(db, job["id"])
    try:
        wait_for(lambda: row().status != "queued", 120, "a worker to claim the job", first_log)
        wait_for(lambda: row().status in ("succeeded", "failed"), 240, "the two-host job", first_log)
        final = row()
        assert final.status == "succeeded", f"{final.error}\n{(first_log.read_text() + second_log.read_text())[-4000:]}"
        wait_for(lambda: "'done'" in first_log.read_text() + second_log.read_text(), 60, "the joined host to finish",
                 second_log)
    finally:
        _stop(first, second)

    messages = _messages(client, auth, job["id"])
    assert any(m.startswith("node 0 of 2: ") and "hosts the rendezvous 127.0.0.1:" in m for m in messages), messages
    assert any(m.startswith("node 1 of 2 joined: ") for m in messages), messages
    assert any(m.startswith("all 2 hosts joined: node 0 ") for m in messages), messages
    assert final.step == 6
    steps = [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]]
    assert steps == [3, 6]
    meta = tmp_path / "meta.json"
    storage.get_file(checkpoint_prefix(job["id"], 6) + "meta.json", meta)
    assert json.loads(meta.read_text())["world_size"] == 2
    state = checkpoint_prefix(job["id"], 6) + "trainer_state/"
    assert {state + "rank0.safetensors", state + "rank1.safetensors"} <= set(storage.list(state))
    assert db.query(JobNode).count() == 0  # the gang's slots went with its run
    for host in ("host_a", "host_b"):  # each host fetched the inputs into its own cache
        assert (tmp_path / host / "datasets").is_dir()


def test_without_enough_hosts_the_gang_timeout_fails_the_job(make_job, settings, client, auth, db, tmp_path):
    job = make_job({"resources": {"gpus": 2, "nodes": 2}})
    worker, log = _host(settings, tmp_path, "lonely", DIFFTUNE_GANG_TIMEOUT_S="5")
    row = _row(db, job["id"])
    try:
        wait_for(lambda: row().status in ("succeeded", "failed"), 120, "the gang timeout", log)
        # its own join task, taken once the worker is free again, finds the gang gone
        wait_for(lambda: "'skipped'" in log.read_text(), 60, "the stale join task", log)
        assert worker.poll() is None  # the worker keeps serving
    finally:
        _stop(worker)
    final = row()
    assert final.status == "failed"
    assert "only 1 of 2 hosts joined within 5 s (DIFFTUNE_GANG_TIMEOUT_S)" in final.error
    assert db.query(JobNode).count() == 0
    assert "job failed: only 1 of 2 hosts" in " ".join(_messages(client, auth, job["id"]))
    stray = subprocess.run(["pgrep", "-f", f"worker.train_entry {job['id']}"], capture_output=True, text=True)
    assert stray.stdout.strip() == ""  # its torchrun was stopped


def test_a_joined_host_stops_when_the_gang_times_out(make_job, settings, client, auth, db, tmp_path):
    """Three hosts asked, two workers: the second joins and starts its torchrun, then the timeout fails
    the job, and the joined host's torchrun is stopped with it."""
    job = make_job({"resources": {"gpus": 3}}, batch_size=6)
    first, first_log = _host(settings, tmp_path, "host_a", DIFFTUNE_GANG_TIMEOUT_S="20")
    second, second_log = _host(settings, tmp_path, "host_b", DIFFTUNE_GANG_TIMEOUT_S="20")
    row = _row(db, job["id"])

    def logs() -> str:
        return first_log.read_text() + second_log.read_text()

    try:
        wait_for(lambda: row().status in ("succeeded", "failed"), 180, "the gang timeout", first_log)
        wait_for(lambda: "'stopped'" in logs(), 60,
                 "the joined host to stop", second_log)
        wait_for(lambda: "'skipped'" in logs(), 60, "the third join task", second_log)
    finally:
        _stop(first, second)
    final = row()
    assert final.status == "failed" and "only 2 of 3 hosts joined within 20 s" in final.error, final.error
    assert any(m.startswith("node 1 of 3 joined: ") for m in _messages(client, auth, job["id"]))
    assert db.query(JobNode).count() == 0
    stray = subprocess.run(["pgrep", "-f", f"worker.train_entry {job['id']}"], capture_output=True, text=True)
    assert stray.stdout.strip() == ""


def test_a_joined_host_shutting_down_requeues_the_job(make_job, settings, client, auth, db, tmp_path):
    """SIGTERM to the joined host's worker: all hosts stop at the next step with a checkpoint and the
    job goes back to the queue (not cancelled), as when a single-host worker shuts down."""
    job = make_job({"resources": {"gpus": 2}}, max_steps=2000, checkpoint_every=5000, sample_every=5000)
    hosts = [_host(settings, tmp_path, name, DIFFTUNE_GANG_TIMEOUT_S="120") for name in ("host_a", "host_b")]
    row = _row(db, job["id"])
    events = lambda: client.get(f"/v1/jobs/{job['id']}/events?limit=100", headers=auth).json()["data"]  # noqa: E731
    try:
        wait_for(lambda: row().step >= 1, 180, "the two hosts to train", hosts[0][1])
        joined = next(e for e in events() if e["message"].startswith("node 1 of 2 joined: "))
        pid = int(joined["data"]["worker"].rsplit(":", 1)[1])
        joiner, log = next((proc, log) for proc, log in hosts if proc.pid == pid)
        joiner.send_signal(signal.SIGTERM)
        assert joiner.wait(120) == 0, log.read_text()[-3000:]
        requeued = wait_for(lambda: next((e["message"] for e in events() if "is shutting down; job requeued" in
                                          e["message"]), None), 60, "the requeue", log)
    finally:
        _stop(*(proc for proc, _ in hosts))
    assert requeued.startswith(f"a host of the job ({joined['data']['worker']}) is shutting down; job requeued "
                               "after a checkpoint at step ")
    step = int(requeued.rsplit(" ", 1)[1])
    assert 1 <= step < 2000
    assert [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]] == [step]
    assert "job cancelled" not in [e["message"] for e in events()]
