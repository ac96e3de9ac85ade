"""The Celery app of the workers: ``--queues gpu`` on GPU hosts (training, one job at a time, solo pool)
and ``--queues checks`` on CPU hosts (base-model load checks), or both queues on one small machine.

Late ack + reject on worker lost + prefetch 1: a job is acknowledged only when it ended, and a
worker holds one job at a time. The broker's visibility timeout is longer than the longest job;
lost workers are detected sooner by the job heartbeat (see ``worker.reaper``).
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from core.queue import CHECK_BASE_MODEL_TASK, CHECKS_QUEUE, DELIVER_WEBHOOK_TASK, GPU_QUEUE, WEBHOOKS_QUEUE
from core.settings import load_settings

VISIBILITY_TIMEOUT = 7 * 24 * 3600  # longer than any job; the heartbeat reaper reacts first


def make_app() -> Celery:
    settings = load_settings()
    app = Celery("difftune-worker", broker=settings.broker_url, include=["worker.tasks", "worker.webhook_tasks"])
    app.conf.update(
        task_default_queue=GPU_QUEUE,
        task_routes={CHECK_BASE_MODEL_TASK: {"queue": CHECKS_QUEUE}, DELIVER_WEBHOOK_TASK: {"queue": WEBHOOKS_QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.broker_url.startswith(("redis", "rediss", "sqs")):
        app.conf.broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if settings.broker_url.startswith("sqla+"):
        from kombu.transport.sqlalchemy import Transport

        Transport.polling_interval = 0.5  # a class attribute, not a transport option
    return app


app = make_app()


@worker_ready.connect
def _start_reaper(sender=None, **_):
    from worker.reaper import start_reaper

    start_reaper()


@worker_shutdown.connect
def _stop_reaper(sender=None, **_):
    from worker.reaper import stop_reaper

    stop_reaper()


@worker_shutting_down.connect
def _checkpoint_and_requeue(sender=None, **_):
    """SIGTERM (warm shutdown): the running job checkpoints at its next step and goes back to the queue."""
    from worker.shutdown import request_shutdown

    request_shutdown()
