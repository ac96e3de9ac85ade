"""``difftune jobs metrics``: a job's metrics history (every logged step, or averages over step ranges)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from difftune_client.cli._common import JsonOption, client, handled, number, print_json, table
from difftune_client.cli.jobs import jobs_app

TABLE_POINTS = 50  # rows of the table when --max-points is not given (the API's own default is 1,000)


@jobs_app.command("metrics")
@handled
def jobs_metrics(
    job_id: str,
    max_points: Annotated[int | None, typer.Option(
        help=f"Most points; a longer range comes back averaged over equal step ranges (default {TABLE_POINTS} "
        "for the table, the API's 1000 with --json).")] = None,
    from_step: Annotated[int | None, typer.Option(help="First step of the range.")] = None,
    to_step: Annotated[int | None, typer.Option(help="Last step of the range.")] = None,
    as_json: JsonOption = False,
) -> None:
    """A job's metrics history: losses (target and bank), learning rate, images/s by step."""
    points = max_points if max_points is not None or as_json else TABLE_POINTS
    history = client().jobs.metrics(job_id, max_points=points, from_step=from_step, to_step=to_step)
    if as_json:
        return print_json(history)
    if not history.data:
        typer.echo(f"no metrics recorded for {job_id}" + (" in that step range" if (from_step, to_step) != (None, None) else ""))
        return
    table(["STEP", "LOSS", "TARGET", "BANK", "LR", "IMG/S"],
          [[str(p.step), number(p.loss), number(p.loss_target), number(p.loss_bank), number(p.learning_rate, ".2e"),
            number(p.images_per_sec, ".1f")] for p in history.data])
    averaged = " (each row averages a step range; zoom in with --from-step/--to-step)" if history.downsampled else ""
    typer.echo(f"{len(history.data)} rows of {history.total_points} logged steps{averaged}")
    if history.evaluation:
        latest = {k: v for k, v in history.evaluation.items() if k != "history"}
        typer.echo(f"evaluation: {json.dumps(latest)}")
