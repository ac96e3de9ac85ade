"""``difftune datasets | base-models | jobs | api-keys | webhooks``: the REST API from a terminal, over
:mod:`difftune_client`.

Mounted on the ``difftune`` console script by :mod:`cli.main` when httpx is installed (the ``client``
or ``service`` extra). The service is ``$DIFFTUNE_BASE_URL`` (or ``--base-url`` after the group name)
and the key ``$DIFFTUNE_API_KEY`` (never an option: it would show in process lists and shell history).
Human output by default, ``--json`` for scripts; an error is one line ``error: …`` and exit code 1.

One module per resource; ``_common`` holds what they share. ``jobs`` owns the ``jobs`` group, which
``outputs`` (checkpoints, samples, reports), ``metrics``, ``webhooks`` and ``probes`` add to.
"""

from __future__ import annotations

import typer

from difftune_client.cli import metrics, outputs, probes  # noqa: F401 - they add their commands to ``jobs``
from difftune_client.cli._common import UsageError
from difftune_client.cli.base_models import base_models_app, parse_location
from difftune_client.cli.datasets import datasets_app
from difftune_client.cli.jobs import jobs_app, parse_sets
from difftune_client.cli.keys import keys_app
from difftune_client.cli.webhooks import webhooks_app
from difftune_client.client import Client

__all__ = ["UsageError", "client_factory", "parse_location", "parse_sets", "register"]


def client_factory(base_url: str | None) -> Client:
    """The client every command uses (tests replace it with one on the app's TestClient)."""
    return Client(base_url)


def register(app: typer.Typer) -> None:
    """Mount ``datasets``, ``base-models``, ``jobs``, ``api-keys`` and ``webhooks`` on the ``difftune`` app."""
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(base_models_app, name="base-models")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(keys_app, name="api-keys")
    app.add_typer(webhooks_app, name="webhooks")
