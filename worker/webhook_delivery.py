"""Sending one webhook delivery: claim it, check where it goes, sign it, POST it, record what happened."""

from __future__ import annotations

import json
import logging
import threading

import httpx
from standardwebhooks import Webhook

from core.queue import enqueue_webhook
from core.services import webhooks
from core.tables import utcnow
from worker.context import context

log = logging.getLogger(__name__)
USER_AGENT = "difftune-webhooks/1"


def deliver(delivery_id: str) -> str:
    """One attempt at a delivery; returns its status after it (``skipped`` when it was not due or another
    attempt holds it). A failed attempt is scheduled again after its back-off."""
    ctx = context()
    settings = ctx.settings
    with ctx.sessions() as session:
        delivery = webhooks.claim(session, delivery_id=delivery_id)
        if delivery is None:
            return "skipped"
        secret = webhooks.tenant_secret(session, tenant_id=delivery.tenant_id)
        body = json.dumps(delivery.payload, separators=(",", ":"))
        status, error, retry = None, None, True
        try:
            webhooks.resolve(delivery.url, settings)
            now = utcnow()
            headers = {"webhook-id": delivery.id, "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": Webhook(secret).sign(delivery.id, now, body),
                       "content-type": "application/json", "user-agent": USER_AGENT}
            response = httpx.post(delivery.url, content=body, headers=headers, timeout=settings.webhook_timeout_s,
                                  follow_redirects=False)  # a redirect could point anywhere: not followed
            status = response.status_code
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except webhooks.UnsafeTarget as err:
            error, retry = str(err), False
        except (httpx.HTTPError, OSError) as err:
            error = f"{type(err).__name__}: {err}"
        wait = webhooks.record_attempt(session, delivery, status_code=status, error=error,
                                       max_attempts=settings.webhook_max_attempts, retry=retry)
        outcome = delivery.status
    if error:
        log.warning("webhook %s to %s: %s", delivery_id, delivery.url, error)
    if wait is not None:
        try:
            enqueue_webhook(ctx.producer, delivery_id, countdown=wait)
        except Exception as err:  # noqa: BLE001 - the reaper re-sends due deliveries
            log.warning("webhook %s: could not schedule the retry (%s); the reaper will", delivery_id, err)
    return outcome


# --- the relay: deliveries whose task was lost (a broker outage, a crash before it was sent) -------------

RELAY_SECONDS = 5.0
OVERDUE_SECONDS = 30.0  # younger due deliveries most likely have their task in the queue already
_stop = threading.Event()
_thread: threading.Thread | None = None


def relay_once() -> list[str]:
    """Send a task for every delivery overdue by ``OVERDUE_SECONDS``; returns their ids."""
    ctx = context()
    with ctx.sessions() as session:
        ids = webhooks.due(session, overdue_seconds=OVERDUE_SECONDS)
    for delivery_id in ids:
        enqueue_webhook(ctx.producer, delivery_id)
    return ids


def _loop() -> None:
    while not _stop.wait(RELAY_SECONDS):
        try:
            relay_once()
        except Exception:  # noqa: BLE001 - the relay must survive database and broker hiccups
            log.exception("webhook relay failed; retrying")


def start_relay() -> None:
    global _thread
    if _thread and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_loop, name="difftune-webhook-relay", daemon=True)
    _thread.start()


def stop_relay() -> None:
    _stop.set()
