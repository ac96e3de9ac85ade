"""POST /v1/jobs with dry_run: a memory-plan job measures one step of the tuning job on a worker and
records its memory by part, or fails naming the settings to change when it does not fit."""

from __future__ import annotations

from .conftest import TINY_HYPERPARAMETERS


def post_plan(client, auth, job, **changes):
    return client.post("/v1/jobs", headers=auth, json={
        "base_model": job["base_model"], "dataset": job["dataset"], "dry_run": True,
        "hyperparameters": {**TINY_HYPERPARAMETERS, **changes}})


def test_a_dry_run_measures_one_step_and_judges_the_fit(make_job, worker_ctx, client, auth, monkeypatch):
    from worker import context as context_module
    from worker.pipeline import run

    job = make_job()
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)  # only the plans below are queued
    plan = post_plan(client, auth, job)
    assert plan.status_code == 201, plan.text
    assert plan.json()["kind"] == "memory_plan" and plan.json()["progress"]["total_steps"] == 1
    assert run(plan.json()["id"]) == "succeeded"
    done = client.get(f"/v1/jobs/{plan.json()['id']}", headers=auth).json()
    measured = done["metrics"]["memory_plan"]
    assert measured["batch_per_process"] == 4 and measured["parts_gb"]["activations"] > 0
    assert measured["fits"] is None  # a CPU worker with no budget reports, it does not judge
    assert client.get(f"/v1/jobs/{plan.json()['id']}/checkpoints", headers=auth).json()["data"] == []

    monkeypatch.setenv("DIFFTUNE_WORKER_GPU_MEMORY_GB", "0.0001")
    context_module.context.cache_clear()
    tight = post_plan(client, auth, job)
    assert run(tight.json()["id"]) == "failed"
    error = client.get(f"/v1/jobs/{tight.json()['id']}", headers=auth).json()["error"]
    assert "does not fit: one training step needs" in error and "gradient_checkpointing: true" in error

    bad = post_plan(client, auth, job, batch_size=0)  # a plan is validated like the job it describes
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "hyperparameters.batch_size"
