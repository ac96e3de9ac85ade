"""Pages a dashboard draws from, at scale: 1,000 jobs and one job with 100,000 metric points.

Seeds the rows straight into the benchmark database (the API is what is measured, not the inserts),
then times, one request after another over a warm connection, the jobs list (first page of 100), one
job, and its metrics history (downsampled to 1,000 points by default, and a zoom into 1,000 steps),
and the web dashboard's own HTML pages over a signed-in session: its jobs page (first page of 50) and
the page of the 100,000-point job (which loads no metric points server-side: its chart fetches them).
Target: each under 300 ms at the median and p95 on this machine.
"""

from __future__ import annotations

import re
import time

import httpx

from bench.service.common import log
from bench.service.latency import percentile
from bench.service.procfs import machine
from bench.service.server import Service

TARGET_MS = 300.0


def seed(svc: Service, *, jobs: int, points: int) -> None:
    """``jobs`` more jobs like the seeded one, and ``points`` logged steps on the seeded job."""
    from sqlalchemy import insert, select

    from core.db import make_engine, make_sessionmaker
    from core.ids import new_id
    from core.tables import Job, JobMetric

    engine = make_engine(svc.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            model = session.execute(select(Job).where(Job.id == svc.job_id)).scalar_one()
            fields = {c.key: getattr(model, c.key) for c in Job.__mapper__.column_attrs if c.key != "id"}
            session.execute(insert(Job), [{**fields, "id": new_id("job")} for _ in range(jobs)])
            for start in range(1, points + 1, 20_000):
                session.execute(insert(JobMetric), [
                    {"job_id": svc.job_id, "step": s, "loss": 1.0 / s, "loss_target": 1.2 / s, "loss_bank": 0.05,
                     "learning_rate": 1e-4, "images_per_sec": 640.0}
                    for s in range(start, min(points, start + 19_999) + 1)])
            session.commit()
    finally:
        engine.dispose()


def _time(client: httpx.Client, path: str, params: dict, repeats: int) -> dict:
    times, body = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(path, params=params)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
        body = response.json() if response.headers["content-type"].startswith("application/json") else response.text
    ordered = sorted(times)
    return {"p50_ms": round(percentile(ordered, 50), 1), "p95_ms": round(percentile(ordered, 95), 1),
            "max_ms": round(ordered[-1], 1), "body": body}


def measure_history(svc: Service, *, jobs: int = 1000, points: int = 100_000, repeats: int = 30) -> dict:
    log(f"seeding {jobs} jobs and {points} metric points")
    seed(svc, jobs=jobs, points=points)
    pages = {"jobs_list": ("/v1/jobs", {"limit": 100}), "job": (f"/v1/jobs/{svc.job_id}", {}),
             "metrics": (f"/v1/jobs/{svc.job_id}/metrics", {}),
             "metrics_zoom": (f"/v1/jobs/{svc.job_id}/metrics", {"from_step": 50_001, "to_step": 51_000})}
    figures = {}
    with httpx.Client(base_url=svc.base_url, headers=svc.headers, timeout=30) as client:
        for name, (path, params) in pages.items():
            client.get(path, params=params)  # warm
            result = _time(client, path, params, repeats)
            body = result.pop("body")
            if name.startswith("metrics"):
                result.update(points=len(body["data"]), total_points=body["total_points"],
                              downsampled=body["downsampled"])
            figures[name] = {**result, "target_ms": TARGET_MS, "ok": result["p95_ms"] < TARGET_MS}
    client = dashboard_session(svc)
    try:
        for name, path in {"dashboard_jobs": "/ui/jobs", "dashboard_job": f"/ui/jobs/{svc.job_id}"}.items():
            client.get(path)  # warm
            result = _time(client, path, {}, repeats)
            result.update(html_bytes=len(result.pop("body").encode()))
            figures[name] = {**result, "target_ms": TARGET_MS, "ok": result["p95_ms"] < TARGET_MS}
    finally:
        client.close()
    return {"measurement": "history", "jobs": jobs + 1, "metric_points": points, "repeats": repeats,
            "pages": figures, "machine": machine()}


def dashboard_session(svc: Service) -> httpx.Client:
    """A client signed in to the dashboard (``/ui``) with the benchmark's key, as a browser is: the session
    cookie it keeps, no Authorization header."""
    client = httpx.Client(base_url=svc.base_url, timeout=30)
    form = client.get("/ui/sign-in")
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form.text).group(1)
    key = svc.headers["Authorization"].removeprefix("Bearer ")
    answer = client.post("/ui/sign-in", data={"api_key": key, "csrf_token": token, "next": "/ui/jobs"})
    if answer.status_code != 303:
        raise RuntimeError(f"dashboard sign-in answered {answer.status_code}")
    return client
