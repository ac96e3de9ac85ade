"""``keys create`` makes a tenant and a key that authenticates."""

from __future__ import annotations

from typer.testing import CliRunner

from core.keys_cli import keys_app
from core.services import api_keys


def test_keys_create_prints_a_working_key(db, pg_url, monkeypatch):
    monkeypatch.setenv("DIFFTUNE_DATABASE_URL", pg_url)
    result = CliRunner().invoke(keys_app, ["create", "--tenant", "acme", "--name", "ci"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[0]
    assert secret.startswith("dtk_")
    assert api_keys.authenticate(db, secret=secret).name == "acme"
    listing = CliRunner().invoke(keys_app, ["list", "--tenant", "acme"])
    assert secret[:12] in listing.stdout and secret not in listing.stdout


def test_bad_settings_exit_with_the_variable_name(monkeypatch):
    monkeypatch.setenv("DIFFTUNE_DATABASE_URL", "mysql://nope")
    result = CliRunner().invoke(keys_app, ["create", "--tenant", "acme"])
    assert result.exit_code == 2 and "DIFFTUNE_DATABASE_URL" in result.output
