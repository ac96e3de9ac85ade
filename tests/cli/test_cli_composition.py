"""``difftune`` shows the commands of the extras that are installed, and only those."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from cli import main

LIBRARY = {"train", "plan", "bank", "sample", "bench", "analyze", "tiny", "library-demo"}
SERVICE = {"serve", "keys", "demo"}
CLIENT = {"datasets", "base-models", "jobs", "api-keys", "webhooks"}  # the REST client: wherever httpx is installed


def command_names(app) -> set[str]:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return set(re.findall(r"^│ ([a-z][\w-]*)\s", result.output, flags=re.MULTILINE))


def test_with_every_extra_installed_all_commands_appear():
    assert command_names(main.app) == LIBRARY | SERVICE | CLIENT


def test_without_the_service_extra_its_commands_are_hidden(monkeypatch):
    monkeypatch.setattr(main, "installed", lambda modules: modules != main.SERVICE_MODULES)
    assert command_names(main.build_app()) == LIBRARY | CLIENT


def test_without_httpx_the_client_commands_are_hidden(monkeypatch):
    monkeypatch.setattr(main, "installed", lambda modules: modules not in (main.SERVICE_MODULES, main.CLIENT_MODULES))
    assert command_names(main.build_app()) == LIBRARY


def test_without_the_ml_extra_only_the_service_commands_remain(monkeypatch):
    monkeypatch.setattr(main, "installed", lambda modules: modules != main.ML_MODULES)
    assert command_names(main.build_app()) == {"serve", "keys"} | CLIENT
