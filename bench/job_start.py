"""Embedded-mode benchmark: time from ``POST /v1/jobs`` to the worker's first training step.

``python -m bench.job_start [--bank-size 64]`` starts the embedded stack (SQLite, SQLite broker,
local store) in a temporary folder, uploads a small dataset, registers a tiny DiT, posts a job and
prints one JSON object with the phases read from the job's events.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.service_demo import zip_folder
from worker.embedded import EmbeddedStack


def make_dataset(root: Path, classes: int = 2, per_class: int = 8) -> Path:
    """Class folders of random 16 px PNGs under ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"class_{c}" / f"{i}.png")
    return root


def _when(event: dict) -> float:
    return datetime.fromisoformat(event["created_at"]).timestamp()


def time_to_first_step(work: Path, *, bank_size: int = 64, timeout: float = 300) -> dict:
    """Start the embedded stack and measure POST /v1/jobs → first training step, by phase."""
    from models.tiny import build_tiny_dit_pipeline

    base = build_tiny_dit_pipeline(work / "base", resolution=16, id2label={0: "a", 1: "b"})
    data = zip_folder(make_dataset(work / "data"))
    started = time.perf_counter()
    with EmbeddedStack(work / "service") as stack:
        stack_ready = time.perf_counter() - started
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=60) as c:
            dataset = c.post("/v1/datasets", files={"file": ("d.zip", data, "application/zip")}).json()
            model = c.post("/v1/base-models", json={"name": "tiny", "family": "dit",
                                                    "location": {"kind": "local", "path": str(base)}}).json()
            while c.get(f"/v1/base-models/{model['id']}").json()["status"] == "pending":
                time.sleep(0.2)  # registration enqueues a load check; let it finish first
            hyper = {"resolution": 16, "batch_size": 8, "max_steps": 50, "log_every": 1, "checkpoint_every": 1000,
                     "sample_every": 1000, "bank": {"size": bank_size, "batch_size": 64, "num_inference_steps": 50}}
            posted = time.time()
            job = c.post("/v1/jobs", json={"base_model": model["id"], "dataset": dataset["id"],
                                           "method": "difftune", "hyperparameters": hyper}).json()
            answered = time.time()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                events = c.get(f"/v1/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
                first = next((e for e in events if e["type"] == "progress"), None)
                if first:
                    break
                time.sleep(0.2)
            else:
                raise TimeoutError("no training step within the timeout")
    at = {key: next((_when(e) for e in events if pred(e)), None) for key, pred in {
        "queued": lambda e: e["message"] == "job queued",
        "claimed": lambda e: e["message"].startswith("claimed"),
        "inputs_ready": lambda e: e["message"].startswith("inputs ready"),
        "bank_started": lambda e: "knowledge bank" in e["message"],
        "encode_started": lambda e: e["message"].startswith("encoding"),
        "first_step": lambda e: e["type"] == "progress",
    }.items()}
    return {"measurement": "time_to_first_step", "mode": "embedded (SQLite, sqla+sqlite broker, local dir)",
            "stack_start_s": stack_ready, "post_answered_s": answered - posted, "bank_size": bank_size, "bank_sampler": "ddim 50 steps, cfg 1.5",
            **{f"{k}_s": (v - posted if v else None) for k, v in at.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(time_to_first_step(Path(tmp), bank_size=args.bank_size)), flush=True)


if __name__ == "__main__":
    main()
