"""The webhook task, registered on every worker app (``shared_task``): the training workers' and the light
``worker.webhook_app`` that only sends webhooks (no torch)."""

from __future__ import annotations

from celery import shared_task

from core.queue import DELIVER_WEBHOOK_TASK


@shared_task(name=DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: str) -> str:
    """One attempt at a webhook delivery (its retries are scheduled by the attempt itself)."""
    from worker.webhook_delivery import deliver

    return deliver(delivery_id)
