"""What every client command shares: the client, the ``--base-url`` group option, one-line errors,
output (``--json``, tables, detail grids) and progress bars."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from difftune_client.client import Client
from difftune_client.errors import DifftuneError

F = TypeVar("F", bound=Callable[..., Any])
_options: dict[str, Any] = {"base_url": None}

JsonOption = Annotated[bool, typer.Option("--json", help="Machine output: the API's JSON.")]


class UsageError(DifftuneError):
    """A bad option value, reported like an API error."""


def client() -> Client:
    """The client of this invocation, made by the package's ``client_factory`` (looked up at call
    time, so a test that replaces ``difftune_client.cli.client_factory`` reaches every command)."""
    from difftune_client import cli

    return cli.client_factory(_options["base_url"])


def out() -> Console:
    return Console(highlight=False, soft_wrap=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def handled(fn: F) -> F:
    """Report expected failures as one ``error: …`` line and exit code 1 (130 on Ctrl-C), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DifftuneError, OSError, yaml.YAMLError, ValidationError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _connection(
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="The service (default $DIFFTUNE_BASE_URL, else http://127.0.0.1:8000). "
        "The API key is read from $DIFFTUNE_API_KEY.")] = None,
) -> None:
    _options["base_url"] = base_url


def group(help: str) -> typer.Typer:
    """A top-level command group (``difftune jobs``), taking ``--base-url`` after its name."""
    app = typer.Typer(help=help, no_args_is_help=True, add_completion=False)
    app.callback()(_connection)
    return app


def subgroup(help: str) -> typer.Typer:
    """A group inside a group (``difftune jobs samples``); ``--base-url`` goes after the outer name."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False)


# --- values -----------------------------------------------------------------------------------------


def parse_labels(items: list[str] | None, option: str = "--metadata") -> dict[str, str]:
    """``["team=vision"]`` → ``{"team": "vision"}`` (labels stored with a job)."""
    labels = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects KEY=VALUE (got {item!r})")
        labels[key] = value
    return labels


def take(items: Iterable[Any], limit: int) -> list[Any]:
    """The first ``limit`` of ``items`` (pages are fetched only as far as needed)."""
    found = []
    for item in items:
        if len(found) >= limit:
            break
        found.append(item)
    return found


# --- output -----------------------------------------------------------------------------------------


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(_dump(value), indent=2, ensure_ascii=False))


def when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def size(n: int) -> str:
    amount = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{n} B"  # pragma: no cover


def number(value: float | None, spec: str = ".4g") -> str:
    """A figure for a table cell; ``-`` when absent."""
    return "-" if value is None else format(value, spec)


def details(rows: Iterable[tuple[str, Any]]) -> None:
    """Two columns, name and value; empty values left out, non-strings shown as JSON."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in rows:
        if value not in (None, "", {}, []):
            grid.add_row(name, value if isinstance(value, str) else json.dumps(value, default=str))
    out().print(grid)


def table(columns: list[str], rows: Iterable[list[str]]) -> None:
    """A borderless table with a bold header row."""
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*row)
    out().print(grid)


# --- progress bars ------------------------------------------------------------------------------------


def transfer_bar() -> Progress:
    """Bars on stderr while bytes move, gone when done; off when stderr is not a terminal (a script's
    stderr then holds only notes and the ``error: …`` line)."""
    console = err()
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)


def upload(send: Callable[[Callable[[int, int], None]], Any], label: str) -> Any:
    """Run ``send(progress)`` under one progress bar (``progress(sent, total)``)."""
    with transfer_bar() as bar:
        task = bar.add_task(label, total=None)
        return send(lambda sent, total: bar.update(task, completed=sent, total=total))


def download_progress(bar: Progress) -> Callable[[str, int, int | None], None]:
    """A ``progress(path, received, total)`` callback drawing one bar per file on ``bar``."""
    tasks: dict[str, TaskID] = {}

    def progress(path: str, done: int, total: int | None) -> None:
        if path not in tasks:
            tasks[path] = bar.add_task(path, total=total)
        bar.update(tasks[path], completed=done, total=total)

    return progress
