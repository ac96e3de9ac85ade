"""A light Celery app that only sends webhooks: ``celery --app worker.webhook_app:app worker --queues webhooks
--pool threads --concurrency 8``. It imports no torch, so it runs beside the API or on any small host; the
training workers should not take the ``webhooks`` queue (a solo pool would hold deliveries until a job
ends)."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from core.queue import WEBHOOKS_QUEUE
from core.settings import load_settings


def make_app() -> Celery:
    settings = load_settings()
    app = Celery("difftune-webhooks", broker=settings.broker_url, include=["worker.webhook_tasks"])
    app.conf.update(task_default_queue=WEBHOOKS_QUEUE, task_acks_late=True, task_reject_on_worker_lost=True,
                    worker_prefetch_multiplier=1, task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
    return app


app = make_app()


@worker_ready.connect
def _start_relay(sender=None, **_):
    from worker.webhook_delivery import start_relay

    start_relay()


@worker_shutdown.connect
def _stop_relay(sender=None, **_):
    from worker.webhook_delivery import stop_relay

    stop_relay()
