"""The service's commands: ``difftune serve`` (embedded mode) and ``difftune keys``.

Mounted on the ``difftune`` console script by :mod:`cli.main` when the ``service`` extra is installed.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.keys_cli import keys_app

console = Console(stderr=True)


def serve(
    home: Annotated[Path, typer.Option(help="Folder of the embedded database, broker and store.")] = Path(
        ".cache/difftune/embedded"),
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
) -> None:
    """Embedded mode: API + worker on this machine (SQLite, SQLite broker, local store) until Ctrl-C,
    SIGTERM or SIGHUP; then both are stopped (SIGKILL after a grace period) and it exits 0."""
    from worker.embedded import EmbeddedStack

    stack = EmbeddedStack(home, port=port)
    code = 0
    with stack.stop_on_signals():  # a second signal cuts the grace period short
        try:
            stack.start()
            if stack.stop_signal is None:
                print(f"API:     {stack.url}   (docs: {stack.url}/docs, dashboard: {stack.url}/ui)")
                print(f"API key: {stack.api_key}   (tenant 'local'; kept in {stack.home}/api_key)")
                print(f"logs:    {stack.log_dir}", flush=True)
                if not stack.wait():
                    console.print("[red]a service process exited; stopping[/red]")
                    code = 1
            if stack.stop_signal is not None:
                console.print(f"{signal.Signals(stack.stop_signal).name}: stopping the API and the worker")
        finally:
            stack.stop()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Mount the service's commands on the ``difftune`` app."""
    app.add_typer(keys_app, name="keys")
    app.command()(serve)
