"""Webhooks: a job's events POSTed to the URL its owner gave and to the tenant's endpoint, signed as
Standard Webhooks, retried.

Outbox: a status change or a published output stages a delivery row in the same transaction as the
change (``emit``), so none is lost when a process dies right after it commits. ``worker.tasks.
deliver_webhook`` (queue ``webhooks``) sends one; every worker's reaper re-sends deliveries that are
due, so one whose task was lost (a broker outage) still goes out. An attempt first claims its row for
``CLAIM_SECONDS`` (``claim``), so two sends of one delivery never both POST.

Where an event goes (``emit``): the job's own webhook (``POST /v1/jobs`` ``webhook``) and the tenant's
endpoint (``set_endpoint``, ``PUT /v1/webhooks/endpoint``), each when it wants the event; one delivery
row per URL, so an endpoint that is also the job's webhook gets the event once (``target='both'``).

Targets (``check_url``, ``check_addresses``): http or https, a host matching
``DIFFTUNE_WEBHOOK_ALLOWED_HOSTS`` when the operator set one, and every address the host resolves to
public unless ``DIFFTUNE_WEBHOOK_ALLOW_PRIVATE``: checked at submission (literal addresses) and again,
after DNS, before every attempt, so a webhook cannot be pointed at the service's own network.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.errors import InvalidError, NotFoundError, ServiceError
from core.ids import new_id
from core.services.pagination import Page, paginate
from core.settings import Settings
from core.tables import Job, WebhookDelivery, WebhookEndpoint, WebhookSecret, utcnow

log = logging.getLogger(__name__)
EVENTS = ("job.running", "job.succeeded", "job.failed", "job.cancelled", "job.checkpoint", "job.sample")
CLAIM_SECONDS = 60  # an attempt's hold on its delivery (longer than the request timeout)
MAX_URL = 2000


class UnsafeTarget(ValueError):
    """The webhook's host is not allowed or resolves to a private address; not retried."""


# --- targets ---------------------------------------------------------------------------------------


def check_url(url: str, settings: Settings, *, field: str = "webhook.url") -> str:
    """The URL if it may receive webhooks; else ``InvalidError`` naming ``field``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidError.field(field, "must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidError.field(field, "must not carry credentials; verify the signature instead")
    try:
        check_host(parts.hostname, settings)
        literal = _literal_address(parts.hostname)
        if literal is not None:
            check_addresses([literal], settings)
    except UnsafeTarget as err:
        raise InvalidError.field(field, str(err)) from None
    return url


def check_host(host: str, settings: Settings) -> None:
    """``UnsafeTarget`` unless ``host`` is on the operator's allow-list (any host when it is empty)."""
    allowed = [h.lower().lstrip(".") for h in settings.webhook_allowed_hosts]
    host = host.lower().rstrip(".")
    if allowed and not any(host == a or host.endswith("." + a) for a in allowed):
        raise UnsafeTarget(f"host {host} is not on the operator's webhook allow-list (DIFFTUNE_WEBHOOK_ALLOWED_HOSTS)")


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_addresses(addresses, settings: Settings) -> None:
    """``UnsafeTarget`` when any address is private, loopback, link-local or otherwise not global and
    the operator did not allow private targets."""
    if settings.webhook_allow_private:
        return
    for address in addresses:
        address = getattr(address, "ipv4_mapped", None) or address
        if not address.is_global or address.is_multicast:
            raise UnsafeTarget(f"resolves to {address}, a private, loopback or reserved address; webhooks go to "
                               "public hosts (DIFFTUNE_WEBHOOK_ALLOW_PRIVATE allows others)")


def resolve(url: str, settings: Settings) -> None:
    """Check the URL's host and every address DNS gives for it, just before an attempt."""
    parts = urlsplit(url)
    check_host(parts.hostname or "", settings)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise OSError(f"cannot resolve {parts.hostname}: {err.strerror}") from None
    check_addresses([ipaddress.ip_address(info[4][0]) for info in infos], settings)


# --- the signing secret of a tenant -------------------------------------------------------------------


def tenant_secret(session: Session, *, tenant_id: str, rotate: bool = False) -> str:
    """The tenant's signing secret (``whsec_`` + base64, Standard Webhooks), made on first use; a new
    one when ``rotate``."""
    row = session.get(WebhookSecret, tenant_id)
    if row is None or rotate:
        value = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        if row is None:
            row = WebhookSecret(tenant_id=tenant_id, secret=value)
            session.add(row)
        else:
            row.secret, row.created_at = value, utcnow()
        session.commit()
    return row.secret


# --- the tenant's endpoint ----------------------------------------------------------------------------


class NoEndpoint(NotFoundError):
    """The tenant has set no webhook endpoint (404)."""

    def __init__(self) -> None:
        ServiceError.__init__(self, "no webhook endpoint is set for this tenant (PUT /v1/webhooks/endpoint sets one)")
        self.kind, self.resource_id = "webhook endpoint", ""


def get_endpoint(session: Session, *, tenant_id: str) -> WebhookEndpoint:
    """The tenant's endpoint; ``NoEndpoint`` when none is set."""
    row = session.get(WebhookEndpoint, tenant_id)
    if row is None:
        raise NoEndpoint()
    return row


def set_endpoint(session: Session, *, tenant_id: str, url: str, events: list[str] | None) -> WebhookEndpoint:
    """Set (or replace) the tenant's endpoint: every job event of the tenant from now on goes there too
    (``events``: those only). ``url`` is checked by the caller (``check_url``). Deliveries already staged
    keep the URL they were staged for."""
    row = session.get(WebhookEndpoint, tenant_id)
    if row is None:
        row = WebhookEndpoint(tenant_id=tenant_id, url=url, events=events)
        session.add(row)
    else:
        row.url, row.events, row.updated_at = url, events, utcnow()
    session.commit()
    return row


def delete_endpoint(session: Session, *, tenant_id: str) -> None:
    """Remove the tenant's endpoint (``NoEndpoint`` when none is set); no event is staged for it after."""
    session.delete(get_endpoint(session, tenant_id=tenant_id))
    session.commit()


# --- the outbox ---------------------------------------------------------------------------------------

_dispatch: Callable[[str], None] | None = None  # sends a delivery's task; set by the API and the workers


def set_dispatcher(send: Callable[[str], None] | None) -> None:
    """How this process sends a delivery's task once the change that staged it is committed."""
    global _dispatch
    _dispatch = send


def _send_after_commit(session: Session, delivery_id: str) -> None:
    def send(_session) -> None:
        if _dispatch is None:
            return
        try:
            _dispatch(delivery_id)
        except Exception as err:  # noqa: BLE001 - the relay re-sends it from the database
            log.warning("webhook %s: could not send its task now (%s); the relay will", delivery_id, err)

    sa_event.listen(session, "after_commit", send, once=True)



def emit(session: Session, *, job_id: str, event: str, data: dict[str, Any] | None = None) -> list[str]:
    """Stage a delivery of ``event`` to each webhook that wants it: the job's own and the tenant's
    endpoint, once per URL (the caller commits with the change it reports). Returns the delivery ids."""
    job = session.execute(
        select(Job.tenant_id, Job.kind, Job.webhook, Job.status, Job.step,
               WebhookEndpoint.url.label("endpoint_url"), WebhookEndpoint.events.label("endpoint_events"))
        .outerjoin(WebhookEndpoint, WebhookEndpoint.tenant_id == Job.tenant_id).where(Job.id == job_id)
    ).one_or_none()
    if job is None:
        return []
    targets: dict[str, str] = {}  # url → job | tenant | both
    if job.webhook and event in (job.webhook.get("events") or EVENTS):
        targets[job.webhook["url"]] = "job"
    if job.endpoint_url and event in (job.endpoint_events or EVENTS):
        targets[job.endpoint_url] = "both" if job.endpoint_url in targets else "tenant"
    if not targets:
        return []
    now = utcnow()
    payload = {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"),
               "data": {"job_id": job_id, "kind": job.kind, "status": job.status, "step": job.step, **(data or {})}}
    ids = []
    for url, target in targets.items():
        delivery_id = new_id("webhook_delivery")
        session.add(WebhookDelivery(id=delivery_id, job_id=job_id, tenant_id=job.tenant_id, event=event,
                                    target=target, url=url, payload=payload, next_attempt_at=now))
        _send_after_commit(session, delivery_id)
        ids.append(delivery_id)
    return ids


def due(session: Session, *, overdue_seconds: float = 0.0, limit: int = 100) -> list[str]:
    """Pending deliveries due for at least ``overdue_seconds`` (the relay's re-send)."""
    stmt = (select(WebhookDelivery.id).where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at
                                            <= utcnow() - timedelta(seconds=overdue_seconds))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    return list(session.scalars(stmt))


def claim(session: Session, *, delivery_id: str) -> WebhookDelivery | None:
    """Hold a due delivery for one attempt (``CLAIM_SECONDS``); None when it is not due or another
    attempt holds it."""
    now = utcnow()
    stmt = (update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                   WebhookDelivery.next_attempt_at <= now)
            .values(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS)))
    claimed = session.execute(stmt).rowcount == 1
    session.commit()
    return session.get(WebhookDelivery, delivery_id, populate_existing=True) if claimed else None


def record_attempt(session: Session, delivery: WebhookDelivery, *, status_code: int | None, error: str | None,
                   max_attempts: int, retry: bool = True) -> float | None:
    """Record an attempt's outcome: delivered (a 2xx), else pending again after a back-off (5 s, 10 s,
    20 s, … up to an hour) until ``max_attempts``, then failed. Returns seconds until the next try."""
    delivery.attempts += 1
    delivery.response_status, delivery.error = status_code, (error or "")[:1000] or None
    now, wait = utcnow(), None
    if status_code is not None and 200 <= status_code < 300:
        delivery.status, delivery.delivered_at = "delivered", now
    elif retry and delivery.attempts < max_attempts:
        wait = float(min(3600, 5 * 2 ** (delivery.attempts - 1)))
        delivery.next_attempt_at = now + timedelta(seconds=wait)
    else:
        delivery.status = "failed"
    session.commit()
    return wait


def list_page(session: Session, *, job_id: str, limit: int = 20, after: str | None = None) -> Page[WebhookDelivery]:
    """A job's deliveries, oldest first."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
    return paginate(session, stmt, key=WebhookDelivery.id, limit=limit, after=after, newest_first=False)
