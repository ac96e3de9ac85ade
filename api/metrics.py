"""Prometheus metrics at ``GET /metrics`` (prometheus-client): requests, uploads, jobs, queues, workers.

Request latency and upload bytes are recorded as they happen (per process; with several uvicorn
workers set ``PROMETHEUS_MULTIPROC_DIR`` — the API image does — and every process's figures are summed
at scrape time). Jobs by status, broker queue depth and worker heartbeats are read when scraped, from
the database and the broker, so every API process answers the same. Nothing here names a tenant or a
resource id: label values are statuses, queue names, route templates and worker names.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from core.enums import JobStatus
from core.queue import CHECKS_QUEUE, GPU_QUEUE
from core.tables import Job, utcnow

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestMetrics:
    """The request and upload series of one app."""

    def __init__(self, registry: CollectorRegistry):
        self.latency = Histogram("difftune_http_request_duration_seconds", "Time to answer an API request.",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.upload_bytes = Counter("difftune_upload_bytes", "Bytes of accepted uploads.", ["kind"],
                                    registry=registry)


class Timing:
    """ASGI middleware: each HTTP request's duration by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # templates only: no ids
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(time.perf_counter() - start)


class ServiceState(Collector):
    """Jobs by status, broker queue depth and worker heartbeats, read at scrape time."""

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self) -> Iterator[Metric]:
        state = self.app.state
        jobs = GaugeMetricFamily("difftune_jobs", "Jobs by status.", labels=["status"])
        beats = GaugeMetricFamily("difftune_worker_heartbeat_age_seconds",
                                  "Seconds since each worker running a job last beat.", labels=["worker"])
        with state.sessionmaker() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            running = session.execute(
                select(Job.worker, func.max(Job.heartbeat_at)).where(
                    Job.status.in_(JobStatus.on_worker()), Job.worker.is_not(None))
                .group_by(Job.worker)).all()
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        now = utcnow()
        for worker, beat in running:
            if beat is not None:
                beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)
                beats.add_metric([worker], max(0.0, (now - beat).total_seconds()))
        yield jobs
        yield beats
        yield self._queues()

    def _queues(self) -> Metric:
        queues = GaugeMetricFamily("difftune_broker_queue_messages", "Messages waiting in each broker queue.",
                                   labels=["queue"])
        try:
            with self.app.state.celery.connection_for_read() as conn:
                channel = conn.default_channel
                for name in (GPU_QUEUE, CHECKS_QUEUE):
                    queues.add_metric([name], _queue_size(channel, name))
        except Exception as err:  # noqa: BLE001 - a broker outage must not break the scrape
            log.warning("metrics: broker unavailable: %s: %s", type(err).__name__, err)
        return queues


def _queue_size(channel, name: str) -> int:
    """Messages in queue ``name`` (0 when it does not exist yet)."""
    try:
        return int(channel.queue_declare(queue=name, passive=True).message_count)
    except Exception:  # noqa: BLE001 - kombu raises the transport's "not found" for a queue never declared
        return 0


def count_upload(request: Request, kind: str, file) -> None:
    """Add an accepted upload's bytes (``kind``: dataset | base_model) to ``difftune_upload_bytes_total``."""
    stream = file.file
    size = file.size if file.size is not None else stream.seek(0, os.SEEK_END)
    request.app.state.metrics.upload_bytes.labels(kind).inc(size)


def install(app: FastAPI, token: str | None) -> RequestMetrics:
    """Record request metrics and serve ``GET /metrics`` (``Authorization: Bearer <token>`` when set)."""
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry)
    app.add_middleware(Timing, metrics=metrics)
    state = ServiceState(app)

    @app.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        if token and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
            return Response("metrics need the operator's bearer token\n", status_code=401,
                            headers={"WWW-Authenticate": "Bearer"}, media_type="text/plain")
        return Response(exposition(registry, state), media_type=CONTENT_TYPE_LATEST)

    return metrics


def exposition(registry: CollectorRegistry, state: Collector | None) -> bytes:
    """The text a scrape answers: this process's request series (every process's, summed, under
    ``PROMETHEUS_MULTIPROC_DIR``) and the service state."""
    scrape_registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(scrape_registry)
    else:
        scrape_registry.register(_Forward(registry))
    if state is not None:
        scrape_registry.register(state)
    return generate_latest(scrape_registry)


class _Forward(Collector):
    """Exposes another registry's series inside the scrape registry."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
