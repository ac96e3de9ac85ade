"""Enqueue jobs by task name, so the API imports neither the worker nor torch."""

from __future__ import annotations

from celery import Celery

from core.settings import Settings

RUN_JOB_TASK = "worker.tasks.run_job"
JOIN_JOB_TASK = "worker.tasks.join_job"  # a host joining a multi-node job's gang
CHECK_BASE_MODEL_TASK = "worker.tasks.check_base_model"
GPU_QUEUE = "gpu"
CHECKS_QUEUE = "checks"  # base-model load checks: CPU workers, so a flood of them never delays training
DELIVER_WEBHOOK_TASK = "worker.webhook_tasks.deliver_webhook"
WEBHOOKS_QUEUE = "webhooks"  # webhook deliveries: the light worker.webhook_app, never behind a training job


def make_celery(settings: Settings) -> Celery:
    """A producer-side Celery app on the configured broker."""
    app = Celery("difftune", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=GPU_QUEUE,
        broker_connection_timeout=5,
        broker_connection_retry_on_startup=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def _send(app: Celery, task: str, resource_id: str, queue: str) -> None:
    app.send_task(
        task,
        args=[resource_id],
        queue=queue,
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )


def enqueue_job(app: Celery, job_id: str) -> None:
    """Give the ``gpu`` queue a turn for ``job_id``: the worker that takes it runs whichever queued
    job is fairest then (``core.services.jobs.claim_next``); an extra turn is harmless."""
    _send(app, RUN_JOB_TASK, job_id, GPU_QUEUE)


def enqueue_join(app: Celery, job_id: str, attempt: int) -> None:
    """Ask a ``gpu`` worker to join attempt ``attempt`` of the multi-node job ``job_id`` as one of its
    hosts (``worker.gang.join``); one that finds no open slot returns at once."""
    app.send_task(JOIN_JOB_TASK, args=[job_id, attempt], queue=GPU_QUEUE, retry=True,
                  retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})


def enqueue_base_model_check(app: Celery, base_model_id: str) -> None:
    """Ask a ``checks`` worker to load a newly registered base model and mark it ready or failed."""
    _send(app, CHECK_BASE_MODEL_TASK, base_model_id, CHECKS_QUEUE)


def enqueue_webhook(app: Celery, delivery_id: str, *, countdown: float = 0.0) -> None:
    """Send one attempt at a webhook delivery (after ``countdown`` seconds); no broker retries here: a
    lost send is re-sent by the webhook worker's relay from the database."""
    app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOKS_QUEUE, countdown=countdown or None,
                  retry=False)


def check_broker(app: Celery) -> None:
    """Raise unless the broker accepts a connection."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
