"""``difftune webhooks secret [--rotate]``, ``difftune webhooks endpoint get | set URL [--event E]… | delete``
and ``difftune jobs webhook-deliveries``."""

from __future__ import annotations

from typing import Annotated

import typer

from difftune_client.cli._common import (
    JsonOption,
    client,
    details,
    group,
    handled,
    print_json,
    subgroup,
    table,
    take,
    when,
)
from difftune_client.cli.jobs import WEBHOOK_EVENTS, jobs_app
from difftune_client.types import WebhookDelivery, WebhookEndpoint

webhooks_app = group("Webhooks of the service: the secret that signs every delivery, the tenant's endpoint that "
                     "gets every job event (a job's deliveries: difftune jobs webhook-deliveries).")
endpoint_app = subgroup("The tenant's webhook endpoint: every event of every job of the tenant is POSTed there "
                        "too (as well as to a job's own --webhook; once when they are the same URL): get, set, delete.")
webhooks_app.add_typer(endpoint_app, name="endpoint")


@webhooks_app.command("secret")
@handled
def webhooks_secret(
    rotate: Annotated[bool, typer.Option("--rotate", help="Make a new secret; it signs every delivery from now "
                                                          "on, retries of earlier events included.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The tenant's webhook signing secret (whsec_…; made on first use): verify each delivery's
    webhook-signature header with it (Standard Webhooks)."""
    api = client()
    secret = api.webhooks.rotate_secret() if rotate else api.webhooks.secret()
    print_json(secret) if as_json else details([("secret", secret.secret), ("created", when(secret.created_at))])


def _show_endpoint(endpoint: WebhookEndpoint, as_json: bool) -> None:
    if as_json:
        return print_json(endpoint)
    details([("url", endpoint.url), ("events", ", ".join(endpoint.events) if endpoint.events else "all"),
             ("created", when(endpoint.created_at)), ("updated", when(endpoint.updated_at))])


@endpoint_app.command("get")
@handled
def endpoint_get(as_json: JsonOption = False) -> None:
    """The tenant's webhook endpoint (an error when none is set)."""
    _show_endpoint(client().webhooks.endpoint.get(), as_json)


@endpoint_app.command("set")
@handled
def endpoint_set(
    url: Annotated[str, typer.Argument(help="http(s) URL every job event of the tenant is POSTed to, signed with "
                                            "the tenant's secret (difftune webhooks secret).")],
    event: Annotated[list[str] | None, typer.Option(
        "--event", help="Only this event (" + ", ".join(WEBHOOK_EVENTS) + "); repeatable; default all.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Set (or replace) the tenant's webhook endpoint."""
    _show_endpoint(client().webhooks.endpoint.set(url, events=event or None), as_json)


@endpoint_app.command("delete")
@handled
def endpoint_delete() -> None:
    """Remove the tenant's webhook endpoint; events staged before still go out."""
    client().webhooks.endpoint.delete()
    typer.echo("deleted the webhook endpoint")


def _answer(delivery: WebhookDelivery) -> str:
    """What the receiver answered last: its status code, else the error (timeout, refused), else ``-``."""
    if delivery.response_status is not None:
        return str(delivery.response_status)
    return delivery.error or "-"


@jobs_app.command("webhook-deliveries")
@handled
def jobs_webhook_deliveries(
    job_id: str,
    limit: Annotated[int, typer.Option(help="Most deliveries shown.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """A job's webhook deliveries (the delivery log), oldest first."""
    items: list[WebhookDelivery] = take(client().jobs.webhook_deliveries(job_id, limit=min(limit, 100)), limit)
    if as_json:
        return print_json(items)
    table(["ID", "EVENT", "STATUS", "ATTEMPTS", "ANSWER", "CREATED", "DELIVERED", "NEXT ATTEMPT", "TARGET", "URL"],
          [[d.id, d.event, d.status, str(d.attempts), _answer(d), when(d.created_at), when(d.delivered_at),
            when(d.next_attempt_at), d.target, d.url] for d in items])
