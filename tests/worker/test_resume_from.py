"""A job that runs out of GPU memory fails naming the settings to change and keeps its checkpoint;
a new job with ``resume_from`` and the change continues from it. (No GPU here: torch's own
OutOfMemoryError is raised where a GPU would raise it.)"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def oom_after_step(monkeypatch):
    """``oom_after_step(n)``: the next run's training step n+1 runs out of memory."""
    from models.trainer import Trainer

    def arm(step: int) -> None:
        original = Trainer.train_step

        def train_step(self):
            if self.step == step:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return original(self)

        monkeypatch.setattr(Trainer, "train_step", train_step)

    return arm


def post_resumed(client, auth, job, source: str | None = None, **changes):
    """POST a job like ``job`` (with ``changes``) that resumes from ``source`` (default: ``job``)."""
    hyper = {**job["hyperparameters"], **changes}
    for name in ("family", "base_model"):  # set by the service from the registered model
        hyper.pop(name)
    return client.post("/v1/jobs", headers=auth, json={
        "base_model": job["base_model"], "dataset": job["dataset"], "hyperparameters": hyper,
        "resume_from": source or job["id"]})


def test_an_oom_fails_with_advice_and_a_resumed_job_continues(make_job, worker_ctx, client, auth, oom_after_step,
                                                             monkeypatch):
    from worker.pipeline import run

    job = make_job(max_steps=6, checkpoint_every=3)
    oom_after_step(3)
    assert run(job["id"]) == "failed"
    failed = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert "out of memory while training after step 3" in failed["error"]
    assert "gradient_checkpointing: true" in failed["error"] and "batch_size: 2" in failed["error"]
    assert f'"resume_from": "{job["id"]}"' in failed["error"]
    steps = [c["step"] for c in client.get(f"/v1/jobs/{job['id']}/checkpoints", headers=auth).json()["data"]]
    assert steps == [3]  # the last checkpoint is kept

    monkeypatch.undo()
    resumed = post_resumed(client, auth, failed, batch_size=2, gradient_checkpointing=True)
    assert resumed.status_code == 201, resumed.text
    assert resumed.json()["resume_from"] == {"job_id": job["id"], "step": 3}
    assert run(resumed.json()["id"]) == "succeeded"
    done = client.get(f"/v1/jobs/{resumed.json()['id']}", headers=auth).json()
    assert done["progress"]["step"] == 6
    events = client.get(f"/v1/jobs/{done['id']}/events?limit=100", headers=auth).json()["data"]
    started = next(e for e in events if e["message"].startswith("inputs ready"))
    assert f"resuming from step 3 of {job['id']}" in started["message"] and started["data"]["resumed_from"] == 3
    steps = [c["step"] for c in client.get(f"/v1/jobs/{done['id']}/checkpoints", headers=auth).json()["data"]]
    assert steps == [6]  # it trained steps 4..6 only


def test_resume_from_refuses_what_cannot_continue(make_job, worker_ctx, client, auth, other_auth, oom_after_step):
    from worker.pipeline import run

    job = make_job(max_steps=6, checkpoint_every=3)
    running = post_resumed(client, auth, job)
    assert running.status_code == 422 and "resume from a finished job" in running.json()["errors"][0]["message"]
    oom_after_step(3)
    run(job["id"])
    failed = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    cases = {
        "hyperparameters.peft": dict(peft="lora"),
        "hyperparameters.optimizer": dict(optimizer="adamw_8bit"),
        "hyperparameters.max_steps": dict(max_steps=3),
    }
    for field, changes in cases.items():
        refused = post_resumed(client, auth, failed, **changes)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == field, refused.text
    other = post_resumed(client, other_auth, failed)  # another tenant cannot even see it
    assert other.status_code == 422 and other.json()["errors"][0]["field"] in ("base_model", "resume_from")
    unknown = post_resumed(client, auth, failed, source="job_missing")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "resume_from"
    count = len(client.get("/v1/jobs", headers=auth).json()["data"])
    assert count == 1  # nothing was half-created
