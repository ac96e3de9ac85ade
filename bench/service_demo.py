"""``make demo``: one real Diff-Tuning job through the REST API of an embedded stack.

Builds (or reuses) the small digits base model of ``bench.demo``, starts the embedded service,
uploads 10 shots of each of digits 5-9 as a zip, registers the base model, starts a Diff-Tuning
job, follows its progress and prints where the checkpoint and the sample grid are.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx

from core.storage.keys import checkpoint_prefix, sample_key
from worker.embedded import EmbeddedStack

Say = Callable[[str], None]


def zip_folder(folder: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return out.getvalue()


def _check(response: httpx.Response) -> dict:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path} -> {response.status_code}: "
                           f"{response.text}")
    return response.json()


def follow(client: httpx.Client, job_id: str, say: Say, timeout: float) -> dict:
    """Print the job's events as they arrive until it ends; return the final job."""
    after, deadline = None, time.monotonic() + timeout
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        for event in _check(client.get(f"/v1/jobs/{job_id}/events", params=params))["data"]:
            say(f"  [{event['type']}] {event['message']}")
            after = event["id"]
        job = _check(client.get(f"/v1/jobs/{job_id}"))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
        time.sleep(1.0)


def run_service_demo(work: Path, *, steps: int = 400, say: Say = print, timeout: float = 900) -> dict:
    """Run the demo job through the API; return a summary with the output locations."""
    from bench.demo import build_base_model, demo_config, prepare_domains

    work = Path(work).resolve()
    domains = prepare_domains(work / "data")
    base = build_base_model(work, domains["source"], work / "cache", say=say)
    hyperparameters = demo_config(str(base), max_steps=steps, checkpoint_every=steps // 2,
                                  sample_every=steps // 2).model_dump(mode="json", exclude={"base_model", "family"})
    with EmbeddedStack(work / "service") as stack:
        say(f"service: API at {stack.url} (docs {stack.url}/docs), worker running")
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        with httpx.Client(base_url=stack.url, headers=headers, timeout=60) as client:
            dataset = _check(client.post("/v1/datasets", data={"name": "digits 5-9, 10 shots"},
                                         files={"file": ("digits.zip", zip_folder(domains["target"]),
                                                         "application/zip")}))
            say(f"dataset {dataset['id']}: {dataset['num_images']} images, classes {dataset['classes']}")
            model = _check(client.post("/v1/base-models", json={
                "name": "digits-0-4-dit", "family": "dit", "location": {"kind": "local", "path": str(base)}}))
            say(f"base model {model['id']}: {base}")
            job = _check(client.post("/v1/jobs", json={
                "base_model": model["id"], "dataset": dataset["id"], "method": "difftune",
                "hyperparameters": hyperparameters}))
            say(f"job {job['id']} {job['status']}; following its events")
            job = follow(client, job["id"], say, timeout)
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
            checkpoint = _check(client.get(f"/v1/jobs/{job['id']}/checkpoints"))["data"][-1]
            sample = _check(client.get(f"/v1/jobs/{job['id']}/samples"))["data"][-1]
    storage = work / "service" / "storage"
    return {"job": job, "checkpoint": checkpoint, "sample": sample,
            "checkpoint_dir": storage / checkpoint_prefix(job["id"], checkpoint["step"]),
            "sample_file": storage / sample_key(job["id"], sample["step"])}
