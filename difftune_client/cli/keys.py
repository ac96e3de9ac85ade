"""``difftune api-keys list | create | revoke``: the tenant's own API keys (an operator makes a tenant's
first key with ``difftune keys create --tenant NAME`` on the service's host)."""

from __future__ import annotations

from typing import Annotated

import typer

from difftune_client.cli._common import JsonOption, client, details, group, handled, print_json, table, when

keys_app = group("API keys of your tenant: list, create (the secret is shown once), revoke.")


@keys_app.command("list")
@handled
def keys_list(as_json: JsonOption = False) -> None:
    """The tenant's keys, oldest first (prefixes only; the secrets are never shown again)."""
    items = client().api_keys.list()
    if as_json:
        return print_json(items)
    table(["ID", "NAME", "PREFIX", "CREATED", "REVOKED"],
          [[k.id, k.name or "-", k.prefix, when(k.created_at), when(k.revoked_at)] for k in items])


@keys_app.command("create")
@handled
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key (e.g. where it is used).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Another key of the tenant; its secret is printed now and never again."""
    key = client().api_keys.create(name)
    if as_json:
        return print_json(key)
    details([("id", key.id), ("name", key.name), ("prefix", key.prefix), ("secret", key.secret),
             ("created", when(key.created_at))])
    typer.echo("note: store the secret now; the service shows it only once", err=True)


@keys_app.command("revoke")
@handled
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id (key_…) or its prefix.")]) -> None:
    """Revoke one of the tenant's keys, at once (revoking twice is harmless)."""
    client().api_keys.revoke(key)
    typer.echo(f"revoked {key}")
