"""``difftune keys …``: create tenants and API keys (mounted into the main CLI as ``keys_app``)."""

from __future__ import annotations

import typer

from core.db import make_engine, make_sessionmaker
from core.errors import ServiceError
from core.revocations import Revocations, shared_state_url
from core.services import api_keys
from core.settings import SettingsError, load_settings

keys_app = typer.Typer(help="Manage API keys (the database must be migrated: python -m migrations).")


def _settings():
    try:
        return load_settings()
    except SettingsError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None


def _sessionmaker():
    return make_sessionmaker(make_engine(_settings().database_url))


@keys_app.command("create")
def create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant name; created when new."),
    name: str = typer.Option("", "--name", help="A label for the key."),
) -> None:
    """Create an API key for TENANT and print it (it is shown only once)."""
    with _sessionmaker()() as session:
        key, secret = api_keys.create(session, tenant_name=tenant, name=name)
    typer.echo(secret)
    typer.echo(f"created key {key.id} ({key.prefix}…) for tenant {tenant!r}", err=True)


@keys_app.command("list")
def list_keys(tenant: str = typer.Option(..., "--tenant", help="Tenant name.")) -> None:
    """List a tenant's keys (prefixes only)."""
    with _sessionmaker()() as session:
        for key in api_keys.list_for_tenant(session, tenant_name=tenant):
            state = "revoked" if key.revoked_at else "active"
            typer.echo(f"{key.id}\t{key.prefix}…\t{key.name}\t{state}\t{key.created_at:%Y-%m-%d}")


@keys_app.command("revoke")
def revoke(key: str = typer.Argument(..., help="The key's id (key_…) or its prefix as `keys list` shows it.")) -> None:
    """Revoke an API key; requests with it are refused from now on."""
    with _sessionmaker()() as session:
        try:
            revoked = api_keys.revoke(session, key=key)
        except ServiceError as err:
            typer.echo(f"error: {err.detail}", err=True)
            raise typer.Exit(1) from None
    Revocations(shared_state_url(_settings())).announce()  # running API processes drop their key caches
    typer.echo(f"revoked key {revoked.id} ({revoked.prefix}…) at {revoked.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
