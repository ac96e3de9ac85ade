"""The service under a hostile tenant and a flaky cluster: ``python -m bench.service abuse``.

Starts the embedded stack (SQLite, SQLite broker, local store) with a GPU-queue worker and a separate
checks worker, and prints one JSON object:

- ``memory``: the API process's resident memory (VmRSS, and its peak VmHWM) after each attack:
  three concurrent uploads of a ~0.5 MB zip holding one 12000x12000 PNG, a 200 MiB JSON body to
  ``/v1/jobs`` and an unauthenticated 300 MiB upload (both streamed without a Content-Length), with
  the MiB the API process read meanwhile (/proc rchar: sockets and files; the client always sends
  the whole body, the server answers and discards the rest at the socket);
- ``fairness``: while an attacker tenant floods registrations and jobs, the seconds from a victim's
  ``POST /v1/jobs`` to its job being claimed (with how many of the attacker's requests were refused);
- ``requeue``: the seconds from SIGKILL of the worker running a job to the job requeued and claimed
  again by a fresh worker, with the default heartbeat timeout.
"""

from __future__ import annotations

import io
import os
import signal
import tempfile
import threading
import time
import zipfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.job_start import make_dataset
from bench.service.procfs import _status_kib, machine
from bench.service_demo import zip_folder
from worker.embedded import EmbeddedStack

MIB = 1024 * 1024
TINY_JOB = {"resolution": 16, "batch_size": 4, "log_every": 1, "checkpoint_every": 25, "sample_every": 100_000,
            "keep_checkpoints": 2, "bank": {"size": 4, "batch_size": 4, "num_inference_steps": 2}}


def _bomb_zip(side: int = 12000) -> bytes:
    """A zip of one class-folder dataset whose only odd image is a real ``side``x``side`` PNG."""
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (side, side)).save(png, format="PNG", compress_level=9)
    small = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(small, format="PNG")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name in ("a/0.png", "a/1.png", "b/0.png"):
            archive.writestr(name, small.getvalue())
        archive.writestr("b/bomb.png", png.getvalue())
    return out.getvalue()


class _Stream:
    """``size`` bytes of ``prefix`` + filler, sent chunked; counts what the server pulled."""

    def __init__(self, size: int, prefix: bytes = b"", filler: bytes = b" ", suffix: bytes = b""):
        self.size, self.prefix, self.filler, self.suffix, self.sent = size, prefix, filler, suffix, 0

    def __iter__(self):
        yield self.prefix
        chunk = self.filler * (MIB // len(self.filler))
        while self.sent < self.size:
            self.sent += len(chunk)
            yield chunk
        yield self.suffix


def _read_mib(pid: int) -> float:
    """MiB the process has read through system calls so far (sockets included: /proc/<pid>/io rchar)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1]) / MIB
    except (OSError, ValueError):
        pass
    return float("nan")


def _memory(pid: int) -> dict[str, float]:
    return {"rss_mib": round((_status_kib(pid, "VmRSS") or 0) / 1024, 1),
            "peak_mib": round((_status_kib(pid, "VmHWM") or 0) / 1024, 1)}


def measure_memory(stack: EmbeddedStack, api_pid: int) -> dict[str, Any]:
    """API memory before and after each attack, with what the attacker got back."""
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    bomb = _bomb_zip()
    result: dict[str, Any] = {"baseline": _memory(api_pid), "bomb_zip_bytes": len(bomb)}
    codes: list[int] = []

    def upload() -> None:
        with httpx.Client(base_url=stack.url, headers=auth, timeout=300) as client:
            codes.append(client.post("/v1/datasets", files={"file": ("bomb.zip", bomb)}).status_code)

    threads = [threading.Thread(target=upload) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result["image_bomb_x3"] = {**_memory(api_pid), "statuses": sorted(codes)}
    with httpx.Client(base_url=stack.url, timeout=300) as client:
        read = _read_mib(api_pid)
        body = _Stream(200 * MIB, prefix=b'{"base_model": "', filler=b"a", suffix=b'"}')
        status = client.post("/v1/jobs", content=body, headers={**auth, "Content-Type": "application/json"}).status_code
        result["json_200mib"] = {**_memory(api_pid), "status": status,
                                 "api_read_mib": round(_read_mib(api_pid) - read, 1)}
        read = _read_mib(api_pid)
        head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="d.zip"\r\n\r\n'
        body = _Stream(300 * MIB, prefix=head, filler=b"\0", suffix=b"\r\n--x--\r\n")
        status = client.post("/v1/datasets", content=body,
                             headers={"Content-Type": "multipart/form-data; boundary=x"}).status_code
        result["unauthenticated_300mib"] = {**_memory(api_pid), "status": status,
                                            "api_read_mib": round(_read_mib(api_pid) - read, 1)}
    return result


def _tenant_key(stack: EmbeddedStack, tenant: str) -> dict[str, str]:
    from core.db import make_engine, make_sessionmaker
    from core.services import api_keys

    engine = make_engine(stack.env["DIFFTUNE_DATABASE_URL"])
    try:
        with make_sessionmaker(engine)() as session:
            _, secret = api_keys.create(session, tenant_name=tenant)
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {secret}"}


def _setup(client: httpx.Client, base: Path, data: bytes) -> tuple[str, str]:
    """A dataset and a ready tiny base model of the client's tenant: (dataset id, model id)."""
    dataset = client.post("/v1/datasets", files={"file": ("d.zip", data)}).json()["id"]
    model = client.post("/v1/base-models", json={"name": "tiny", "family": "dit",
                                                 "location": {"kind": "local", "path": str(base)}}).json()["id"]
    deadline = time.monotonic() + 120
    while _get(client, f"/v1/base-models/{model}")["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    return dataset, model


def _get(client: httpx.Client, path: str, **params: Any) -> dict:
    """GET JSON, waiting out the key's rate limit (429 + Retry-After) as a well-behaved client does."""
    while True:
        response = client.get(path, params=params)
        if response.status_code != 429:
            response.raise_for_status()
            return response.json()
        time.sleep(float(response.headers.get("Retry-After", "1")))


def _post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    """POST as fast as the key's rate limit allows (a 429 for the rate is waited out; a 429 for a
    quota is the answer)."""
    while True:
        response = client.post(path, json=body)
        if response.status_code != 429 or "rate limit" not in response.json().get("detail", ""):
            return response
        time.sleep(float(response.headers.get("Retry-After", "1")))


def _claimed_at(client: httpx.Client, job_id: str, timeout: float, after_message: str | None = None) -> float:
    """Wall time when ``job_id`` was (next) claimed, polled from its events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = [e["message"] for e in _get(client, f"/v1/jobs/{job_id}/events", limit=100)["data"]]
        start = messages.index(after_message) + 1 if after_message in messages else 0
        if after_message is None or after_message in messages:
            if any(m.startswith("claimed by") for m in messages[start:]):
                return time.time()
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id} was not claimed within {timeout:.0f} s")


def measure_fairness(stack: EmbeddedStack, base: Path, data: bytes, *, registrations: int = 100,
                     jobs: int = 60, steps: int = 300) -> dict[str, Any]:
    """A victim's time to start while an attacker floods registrations and jobs (as fast as its rate
    limit allows; what its quotas refuse is counted)."""
    attacker = httpx.Client(base_url=stack.url, headers=_tenant_key(stack, "attacker"), timeout=60)
    victim = httpx.Client(base_url=stack.url, headers=_tenant_key(stack, "victim"), timeout=60)
    try:
        a_data, a_model = _setup(attacker, base, data)
        v_data, v_model = _setup(victim, base, data)
        registered = Counter(_post(attacker, "/v1/base-models", {
            "name": f"flood-{i}", "family": "dit", "location": {"kind": "hub", "repo_id": f"flood/m{i}"}}).status_code
            for i in range(registrations))
        posted = Counter()
        first = None
        for _ in range(jobs):
            response = _post(attacker, "/v1/jobs", {"base_model": a_model, "dataset": a_data,
                                                    "hyperparameters": {**TINY_JOB, "max_steps": steps}})
            posted[response.status_code] += 1
            first = first or (response.json()["id"] if response.status_code == 201 else None)
        _claimed_at(attacker, first, 120)
        sent = time.time()
        job = victim.post("/v1/jobs", json={"base_model": v_model, "dataset": v_data,
                                            "hyperparameters": {**TINY_JOB, "max_steps": 20}}).json()
        waited = _claimed_at(victim, job["id"], 600) - sent
        queued_ahead = len(_get(attacker, "/v1/jobs", status="queued", limit=100)["data"])
        time.sleep(1.0)  # let the attacker's rate window pass before cleaning up
        for j in _get(attacker, "/v1/jobs", limit=100)["data"]:
            if j["status"] in ("queued", "running"):
                attacker.post(f"/v1/jobs/{j['id']}/cancel")
                time.sleep(0.06)
        return {"attacker_registrations": dict(registered), "attacker_job_posts": dict(posted),
                "attacker_job_steps": steps, "attacker_jobs_still_queued_when_victim_started": queued_ahead,
                "victim_seconds_to_claim": round(waited, 2)}
    finally:
        attacker.close()
        victim.close()


def measure_requeue(stack: EmbeddedStack, base: Path, data: bytes) -> dict[str, Any]:
    """SIGKILL the GPU worker mid-job; seconds until the job is requeued and claimed by a new worker."""
    client = httpx.Client(base_url=stack.url, headers=_tenant_key(stack, "requeue"), timeout=60)
    try:
        dataset, model = _setup(client, base, data)
        job = client.post("/v1/jobs", json={"base_model": model, "dataset": dataset,
                                            "hyperparameters": {**TINY_JOB, "max_steps": 3000}}).json()
        _claimed_at(client, job["id"], 300)
        time.sleep(3)
        gpu = next(p for p in stack.processes if p.poll() is None and "--queues" in p.args
                   and p.args[p.args.index("--queues") + 1] == "gpu")
        os.killpg(gpu.pid, signal.SIGKILL)
        gpu.wait()
        killed = time.time()
        stack.processes.remove(gpu)
        stack.spawn_worker("gpu")
        claimed = _claimed_at(client, job["id"], 300, after_message="worker lost; job requeued")
        events = _get(client, f"/v1/jobs/{job['id']}/events", limit=100)["data"]
        requeued = next(e["created_at"] for e in events if e["message"] == "worker lost; job requeued")
        client.post(f"/v1/jobs/{job['id']}/cancel")
        return {"heartbeat_timeout_s": int(stack.env.get("DIFFTUNE_HEARTBEAT_TIMEOUT", 45)),
                "seconds_to_requeue": round(datetime.fromisoformat(requeued).timestamp() - killed, 2),
                "seconds_to_claimed_again": round(claimed - killed, 2)}
    finally:
        client.close()


def measure_abuse(work: Path | None = None) -> dict[str, Any]:
    """Every measurement above, on one embedded stack."""
    from models.tiny import build_tiny_dit_pipeline

    with tempfile.TemporaryDirectory(prefix="difftune-abuse-") as tmp:
        work = Path(work or tmp)
        base = build_tiny_dit_pipeline(work / "base", resolution=16, id2label={0: "a", 1: "b"})
        data = zip_folder(make_dataset(work / "data", per_class=4))
        with EmbeddedStack(work / "service", worker_queues=("gpu", "checks")) as stack:
            api_pid = stack.processes[0].pid
            return {"measurement": "abuse", "machine": machine(),
                    "mode": "embedded (SQLite, sqla+sqlite broker, local dir), one gpu and one checks worker",
                    "memory": measure_memory(stack, api_pid),
                    "fairness": measure_fairness(stack, base, data),
                    "requeue": measure_requeue(stack, base, data)}
