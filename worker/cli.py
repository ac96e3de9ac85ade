"""The service's commands: ``difftune serve`` (embedded mode) and ``difftune keys``.

Mounted on the ``difftune`` console script by :mod:`cli.main` when the ``service`` extra is installed.
"""

from __future__ import annotations

import time
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
    """Embedded mode: API + worker on this machine (SQLite, SQLite broker, local store) until Ctrl-C."""
    from worker.embedded import EmbeddedStack

    stack = EmbeddedStack(home, port=port).start()
    print(f"API:     {stack.url}   (docs: {stack.url}/docs)")
    print(f"API key: {stack.api_key}   (tenant 'local'; kept in {stack.home}/api_key)")
    print(f"logs:    {stack.log_dir}")
    try:
        while all(p.poll() is None for p in stack.processes):
            time.sleep(1)
        console.print("[red]a service process exited; stopping[/red]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


def register(app: typer.Typer) -> None:
    """Mount the service's commands on the ``difftune`` app."""
    app.add_typer(keys_app, name="keys")
    app.command()(serve)
