"""Real ``celery worker`` processes under a flaky cluster: a worker paused (SIGSTOP) past the heartbeat
timeout while another takes its job over writes nothing once it resumes (SIGCONT), and a worker told to
shut down (SIGTERM) checkpoints at its next step and hands the job back to the queue."""

from __future__ import annotations

import signal

import pytest

from core.tables import Job

from .conftest import start_worker, wait_for, worker_env


def _events(client, auth, job_id) -> list[dict]:
    events, after = [], None
    while True:
        query = f"?limit=100&after={after}" if after else "?limit=100"
        page = client.get(f"/v1/jobs/{job_id}/events{query}", headers=auth).json()
        events += page["data"]
        if not page["has_more"]:
            return events
        after = page["data"][-1]["id"]


def _row(db, job_id: str):
    """A callable that reads the job's row afresh."""
    return lambda: db.get(Job, job_id, populate_existing=True)


def _stop(*processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(10)


@pytest.mark.slow
def test_a_paused_worker_writes_nothing_after_another_took_its_job(make_job, settings, client, auth, db,
                                                                      tmp_path):
    # long enough that the first worker is still far from the end when progress first shows (every 5 s)
    job = make_job(max_steps=1200, checkpoint_every=50, sample_every=5000, log_every=1, keep_checkpoints=3)
    job_id = job["id"]
    env = worker_env(settings, DIFFTUNE_HEARTBEAT_TIMEOUT="3")
    first_log, second_log = tmp_path / "paused.log", tmp_path / "second.log"
    first = start_worker(env, first_log)
    second = None
    row = _row(db, job_id)

    try:
        wait_for(lambda: row().step >= 25, 180, "the first worker to train", first_log)
        first.send_signal(signal.SIGSTOP)
        second = start_worker(env, second_log)
        wait_for(lambda: row().attempts == 2 and row().status == "running", 120, "the takeover", second_log)
        takeover_step = row().step
        wait_for(lambda: row().step >= takeover_step + 5, 120, "the second worker to train", second_log)
        first.send_signal(signal.SIGCONT)
        wait_for(lambda: "'lost'" in first_log.read_text(), 60, "the resumed worker to give up", first_log)
        wait_for(lambda: row().status in ("succeeded", "failed"), 240, "the job to end", second_log)
    finally:
        _stop(first, *([second] if second else []))

    final = row()
    assert (final.status, final.step, final.attempts) == ("succeeded", 1200, 2), final.error
    events = _events(client, auth, job_id)
    messages = [e["message"] for e in events]
    assert messages.count("job succeeded") == 1
    takeover = max(i for i, m in enumerate(messages) if m.startswith("claimed by"))
    after = events[takeover + 1:]
    assert [e for e in after if (e.get("data") or {}).get("attempt") == 1] == []  # the paused one wrote nothing
    steps = [e["data"]["step"] for e in after if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 1200  # progress never went backwards
    assert "lost its lease" in first_log.read_text()
    published = [c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints", headers=auth).json()["data"]]
    assert published == [1100, 1150, 1200]


@pytest.mark.slow
def test_sigterm_checkpoints_at_the_next_step_and_requeues(make_job, settings, client, auth, db, tmp_path):
    job = make_job(max_steps=1000, checkpoint_every=500, sample_every=5000, log_every=1, keep_checkpoints=5)
    job_id = job["id"]
    env = worker_env(settings, DIFFTUNE_HEARTBEAT_TIMEOUT="30")
    first_log, second_log = tmp_path / "terminated.log", tmp_path / "second.log"
    first = start_worker(env, first_log)
    second = None
    row = _row(db, job_id)

    try:
        wait_for(lambda: row().step >= 1, 180, "the worker to train", first_log)  # progress is written every 5 s
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0  # a warm shutdown: the worker exits cleanly after its job
        stopped = row()
        assert stopped.status == "queued" and stopped.worker is None
        published = [c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints", headers=auth).json()["data"]]
        assert len(published) == 1 and 1 < published[0] < 500  # not a periodic one: none was due yet
        second = start_worker(env, second_log)
        wait_for(lambda: row().status in ("succeeded", "failed"), 240, "the requeued job", second_log)
    finally:
        _stop(first, *([second] if second else []))

    assert row().status == "succeeded", row().error
    messages = [e["message"] for e in _events(client, auth, job_id)]
    assert f"worker shutting down; job requeued after a checkpoint at step {published[0]}" in messages
    assert any(m.endswith(f"resuming from step {published[0]}") for m in messages)
