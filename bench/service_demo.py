"""``make demo``: one real Diff-Tuning job through the REST API of an embedded stack.

Builds (or reuses) the small digits base model of ``bench.demo``, starts the embedded service and,
with the Python client (:mod:`difftune_client`), uploads the folder of 10 shots of each of digits
5-9 (zipped on the fly), registers the base model, starts a Diff-Tuning job, follows its events as
they stream in and downloads the checkpoint and the sample grid.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from difftune_client import Client
from worker.embedded import EmbeddedStack

Say = Callable[[str], None]


def zip_folder(folder: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return out.getvalue()


def follow(client: Client, job_id: str, say: Say, timeout: float) -> dict:
    """Print the job's events as they stream in until it ends; return the final job."""
    deadline = time.monotonic() + timeout
    for event in client.jobs.events(job_id, stream=True):
        say(f"  [{event.type}] {event.message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still running after {timeout:.0f}s")
    return client.jobs.get(job_id).model_dump(mode="json")


def run_service_demo(work: Path, *, steps: int = 400, say: Say = print, timeout: float = 900) -> dict:
    """Run the demo job through the API; return a summary with the output locations."""
    from bench.demo import build_base_model, demo_config, prepare_domains

    work = Path(work).resolve()
    domains = prepare_domains(work / "data")
    base = build_base_model(work, domains["source"], work / "cache", say=say)
    hyperparameters = demo_config(str(base), max_steps=steps, checkpoint_every=steps // 2,
                                  sample_every=steps // 2).model_dump(mode="json", exclude={"base_model", "family"})
    outputs = work / "outputs"
    with EmbeddedStack(work / "service") as stack:
        say(f"service: API at {stack.url} (docs {stack.url}/docs), worker running")
        with Client(stack.url, stack.api_key) as client:
            dataset = client.datasets.upload(domains["target"], name="digits 5-9, 10 shots")
            say(f"dataset {dataset.id}: {dataset.num_images} images, classes {dataset.classes}")
            model = client.base_models.create("digits-0-4-dit", "dit", {"kind": "local", "path": str(base)})
            say(f"base model {model.id}: {base}")
            job = client.jobs.create(model, dataset, method="difftune", hyperparameters=hyperparameters)
            say(f"job {job.id} {job.status}; following its events")
            finished = follow(client, job.id, say, timeout)
            if finished["status"] != "succeeded":
                raise RuntimeError(f"job {job.id} {finished['status']}: {finished.get('error')}")
            checkpoint = client.jobs.checkpoints.get(job.id)
            checkpoint_dir = client.jobs.checkpoints.download(job.id, checkpoint.step,
                                                              outputs / f"step_{checkpoint.step:07d}")
            sample_file = client.jobs.samples.download(job.id, dest_dir=outputs)
            sample = max(client.jobs.samples.list(job.id), key=lambda s: s.step)
    return {"job": finished, "checkpoint": checkpoint.model_dump(mode="json"),
            "sample": sample.model_dump(mode="json"), "checkpoint_dir": checkpoint_dir, "sample_file": sample_file}
