"""``difftune webhooks secret [--rotate]`` and ``difftune jobs webhook-deliveries``."""

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
    table,
    take,
    when,
)
from difftune_client.cli.jobs import jobs_app
from difftune_client.types import WebhookDelivery

webhooks_app = group("Webhooks of the service: the secret that signs every delivery (a job's deliveries: "
                     "difftune jobs webhook-deliveries).")


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
    table(["ID", "EVENT", "STATUS", "ATTEMPTS", "ANSWER", "CREATED", "DELIVERED", "NEXT ATTEMPT"],
          [[d.id, d.event, d.status, str(d.attempts), _answer(d), when(d.created_at), when(d.delivered_at),
            when(d.next_attempt_at)] for d in items])
