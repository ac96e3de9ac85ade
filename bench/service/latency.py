"""Latency of ``GET /v1/jobs/{id}`` driven open-loop at a fixed request rate (no coordinated omission)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import os
import time

import httpx

from bench.service.common import log
from bench.service.procfs import cpu_seconds, machine
from bench.service.server import Service

TARGET_P99_MS = 20.0


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class _Pools:
    """Round-robin over several httpx pools: one big pool's bookkeeping grows with its queue."""

    def __init__(self, clients: list[httpx.AsyncClient]):
        self.clients, self._next = clients, itertools.cycle(clients)

    async def get(self, path: str) -> httpx.Response:
        return await next(self._next).get(path)


async def _open_loop(client: httpx.AsyncClient | _Pools, path: str, rate: float, seconds: float) -> dict:
    """Send ``rate × seconds`` GETs on a fixed timetable; latency counts from the scheduled time.

    Times come from ``time.perf_counter`` (uvloop's ``loop.time()`` has millisecond steps).
    """
    clock = time.perf_counter
    total = max(1, round(rate * seconds))
    latencies: list[float] = [math.nan] * total
    lags: list[float] = [0.0] * total
    errors: dict[str, int] = {}

    async def one(i: int, scheduled: float) -> None:
        lags[i] = clock() - scheduled
        try:
            response = await client.get(path)
            if response.status_code != 200:
                errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
        except httpx.HTTPError as err:
            errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
        latencies[i] = clock() - scheduled

    start = clock() + 0.05
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = clock() - start
    ordered = sorted(x * 1000 for x in latencies)
    lags_ms = sorted(x * 1000 for x in lags)
    failed = sum(errors.values())
    return {
        "requests": total,
        "errors": failed,
        "error_kinds": errors,
        "duration_s": round(elapsed, 3),
        "achieved_rps": round((total - failed) / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(ordered, 50), 2),
            "p90": round(percentile(ordered, 90), 2),
            "p99": round(percentile(ordered, 99), 2),
            "max": round(ordered[-1], 2),
            "mean": round(sum(ordered) / len(ordered), 2),
        },
        # How late the client itself started each request (included in the latencies above).
        "send_lag_ms": {"p50": round(percentile(lags_ms, 50), 2), "p99": round(percentile(lags_ms, 99), 2)},
    }


@contextlib.contextmanager
def _client_gc_paused():
    """No garbage collection in the load generator while it measures.

    A full collection of the client's heap takes tens of milliseconds; during it no response is read,
    so it would show up as server latency. A 10 s window at 200 req/s allocates little.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _run_async(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def measure_latency(
    svc: Service,
    *,
    rate: float = 200.0,
    seconds: float = 10.0,
    warmup: float = 2.0,
    connections: int = 32,
    pools: int = 8,
) -> dict:
    """Latency percentiles of ``GET /v1/jobs/{id}`` at a fixed open-loop request rate."""
    path = f"/v1/jobs/{svc.job_id}"
    per_pool = max(1, connections // pools)
    limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)

    async def drive() -> dict:
        clients = [
            httpx.AsyncClient(base_url=svc.base_url, headers=svc.headers, limits=limits, timeout=10.0)
            for _ in range(pools)
        ]
        try:
            if warmup > 0:
                await _open_loop(_Pools(clients), path, rate, warmup)  # connections, caches: discarded
            server_cpu, client_cpu = cpu_seconds(svc.pid), time.process_time()
            with _client_gc_paused():
                result = await _open_loop(_Pools(clients), path, rate, seconds)
            server_cpu_after = cpu_seconds(svc.pid)
        finally:
            for client in clients:
                await client.aclose()
        spent = time.process_time() - client_cpu
        result["client_cpu_ms_per_request"] = round(1000 * spent / result["requests"], 2)
        if server_cpu is not None and server_cpu_after is not None:
            spent = server_cpu_after - server_cpu
            result["server_cpu_ms_per_request"] = round(1000 * spent / result["requests"], 2)
        return result

    log(f"latency: GET {path} at {rate:g} req/s for {seconds:g} s (warm-up {warmup:g} s)")
    load_before = os.getloadavg()[0]
    result = _run_async(drive())
    return {
        "measurement": "latency",
        "endpoint": "GET /v1/jobs/{id}",
        "rate_rps": rate,
        "seconds": seconds,
        "warmup_s": warmup,
        "connections": per_pool * pools,
        "pools": pools,
        **result,
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": result["errors"] == 0 and result["latency_ms"]["p99"] <= TARGET_P99_MS,
        "server": svc.server,
        "client_gc": "paused during the measured window",
        "database": "postgresql",
        "machine": {**machine(), "loadavg_1m_before": round(load_before, 2)},
    }
