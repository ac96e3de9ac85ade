"""``difftune jobs forgetting-probes start | list | get``: chain-of-forgetting probes of a tuned DiT job.

A probe is a job of kind ``forgetting_probe`` (``POST /v1/jobs/{id}/forgetting-probes``): its parameters
are its ``hyperparameters`` (``tuned_job``, ``checkpoint_step``, …), its results its ``metrics`` (FD and
class fidelity per swap step t*, direction and guidance) and its reports (``probe.json``, ``probe.png``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from difftune_client.cli._common import (
    JsonOption,
    UsageError,
    client,
    details,
    handled,
    number,
    parse_labels,
    print_json,
    subgroup,
    table,
    take,
    when,
)
from difftune_client.cli.jobs import (
    IdempotencyOption,
    MetadataOption,
    WaitOption,
    created,
    job_rows,
    job_step,
    jobs_app,
)
from difftune_client.types import Job

KIND = "forgetting_probe"
probes_app = subgroup("Chain-of-forgetting probes of a tuned DiT job's checkpoint: start, list, get "
                      "(their report files: difftune jobs reports).")
jobs_app.add_typer(probes_app, name="forgetting-probes")


def _tuned_job(probe: Job) -> str | None:
    return probe.hyperparameters.get("tuned_job")


def show_probe(probe: Job) -> None:
    """The probe's job rows, its parameters, and FD (class fidelity) per t* once it has them."""
    params = probe.hyperparameters
    rows = [(name, value) for name, value in job_rows(probe) if name not in ("method", "base model", "metrics")]
    rows[3:3] = [("tuned job", _tuned_job(probe)), ("checkpoint step", str(params.get("checkpoint_step", "-"))),
                 ("parameters", {k: params[k] for k in ("points", "samples_per_class", "guidance", "sample_steps",
                                                         "seed", "guidance_mode") if k in params})]
    details(rows)
    metrics: dict[str, Any] = probe.metrics or {}
    if "fd" in metrics and "t_stars" in metrics:
        _curves_table(metrics)


def _curves_table(metrics: dict[str, Any]) -> None:
    """One row per swap step t*; a column per (figure, direction, guidance)."""
    series: list[tuple[str, list[float]]] = []
    for figure, label in (("fd", "FD"), ("class_fidelity", "CLASS FID.")):
        for direction, by_guidance in (metrics.get(figure) or {}).items():
            series += [(f"{label} {direction} g={g}", values) for g, values in by_guidance.items()]
    table(["T*", *[name for name, _ in series]],
          [[str(t), *[number(values[i] if i < len(values) else None, ".3f") for _, values in series]]
           for i, t in enumerate(metrics["t_stars"])])


@probes_app.command("start")
@handled
def probes_start(
    job_id: Annotated[str, typer.Argument(help="The tuned job (class-conditional, e.g. DiT) to probe.")],
    checkpoint_step: Annotated[int | None, typer.Option(help="Its checkpoint to probe (default: the latest).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Real images (class folders) to score against "
                                                     "(default: the job's dataset).")] = None,
    points: Annotated[int | None, typer.Option(help="Swap steps t* spread evenly over 0..T (default 11).")] = None,
    samples_per_class: Annotated[int | None, typer.Option(help="Images per class and point (default 20).")] = None,
    guidance: Annotated[list[float] | None, typer.Option(help="A classifier-free guidance scale; repeatable "
                                                              "(default 1).")] = None,
    sample_steps: Annotated[int | None, typer.Option(help="DDIM steps of every chain (default 25).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    guidance_mode: Annotated[str | None, typer.Option(help="cfg (default), or domain: the tuned model's steps "
                                                           "guided by the base (Domain Guidance).")] = None,
    metadata: MetadataOption = None,
    idempotency_key: IdempotencyOption = None,
    wait: WaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Start a forgetting probe of a tuned job's checkpoint (a job of kind forgetting_probe)."""
    labels = parse_labels(metadata)
    api = client()
    probe = api.jobs.forgetting_probes.create(
        job_id, checkpoint_step=checkpoint_step, dataset=dataset, points=points, samples_per_class=samples_per_class,
        guidance=guidance or None, sample_steps=sample_steps, seed=seed, guidance_mode=guidance_mode,
        metadata=labels or None,
        idempotency_key=idempotency_key)
    created(api, probe, wait, as_json, show=show_probe)


@probes_app.command("list")
@handled
def probes_list(
    job_id: Annotated[str | None, typer.Argument(help="Only the probes of this tuned job.")] = None,
    limit: Annotated[int, typer.Option(help="Most probes shown.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Forgetting probes, newest first (of every job, or of one)."""
    api = client()
    if job_id is not None:
        api.jobs.get(job_id)  # an unknown job (or another tenant's) is an error, not an empty list
    probes = take((j for j in api.jobs.list(limit=100)
                   if j.kind == KIND and (job_id is None or _tuned_job(j) == job_id)), limit)
    if as_json:
        return print_json(probes)
    table(["ID", "STATUS", "TUNED JOB", "CHECKPOINT", "PROGRESS", "CREATED"],
          [[p.id, p.status, _tuned_job(p) or "-", str(p.hyperparameters.get("checkpoint_step", "-")), job_step(p),
            when(p.created_at)] for p in probes])


@probes_app.command("get")
@handled
def probes_get(
    probe_id: Annotated[str, typer.Argument(help="The probe's job id.")],
    as_json: JsonOption = False,
) -> None:
    """Show a probe: status, parameters and, once done, FD and class fidelity per swap step t*."""
    probe = client().jobs.get(probe_id)
    if probe.kind != KIND:
        raise UsageError(f"{probe.id} is a {probe.kind} job, not a forgetting probe (difftune jobs get {probe.id})")
    print_json(probe) if as_json else show_probe(probe)
