"""The full ``difftune`` command: the library's commands plus the service's (keys, serve, demo)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from core.keys_cli import keys_app
from models.cli import app, console

app.add_typer(keys_app, name="keys")


@app.command()
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


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Working folder (base model, data, embedded service).")] = Path(
        ".cache/demo"),
    steps: Annotated[int, typer.Option(help="Diff-Tuning steps.")] = 400,
) -> None:
    """One real Diff-Tuning job through the REST API of an embedded service (what `make demo` runs)."""
    from worker.service_demo import run_service_demo

    result = run_service_demo(out, steps=steps, say=lambda line: console.print(line, soft_wrap=True, markup=False))
    print(f"job:         {result['job']['id']} {result['job']['status']}  metrics {result['job']['metrics']}")
    print(f"checkpoint:  {result['checkpoint_dir']}")
    print(f"sample grid: {result['sample_file']}")


if __name__ == "__main__":
    app()
