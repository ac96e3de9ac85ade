"""Service benchmarks on loopback: ``python -m api.bench [latency|upload|all]``.

Each measurement prints one JSON object on stdout (progress goes to stderr):

* ``latency`` — ``GET /v1/jobs/{id}`` driven open-loop at a fixed rate (requests leave on a fixed
  timetable and latency is counted from the *scheduled* send time, so a stalled server cannot hide
  its queueing delay: no coordinated omission). Percentiles, achieved rate, errors, CPU use.
* ``upload`` — a generated, uncompressed class-folder tar of ``--upload-mb`` MiB streamed to
  ``POST /v1/datasets``; throughput and the server process's peak RSS growth while it is handled.

The server is the real API (``uvicorn --factory api.main:app``, one process, no access log) in a
subprocess on a free port of 127.0.0.1, against a fresh PostgreSQL database
(``difftune_bench_<random>``, migrated, dropped at the end), the Redis broker and a local-directory
store in a temporary folder. The client runs in this process (httpx, one connection pool). Sizes are
MiB (2**20 bytes); times are milliseconds or seconds as the field names say. No torch is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MIB = 1024**2
DEFAULT_PG_ADMIN = os.environ.get("DIFFTUNE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_BROKER = os.environ.get("DIFFTUNE_BENCH_BROKER", "redis://127.0.0.1:6379/14")
TARGET_P99_MS = 20.0
TARGET_RSS_GROWTH_MIB = 100.0
IMAGE_SIDE = 592  # a 592×592 RGB noise PNG is ~1.0 MiB and barely compresses
DISTINCT_IMAGES = 4
CLASSES = 4


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- machine and process figures ------------------------------------------------------------------


def machine() -> dict:
    """The CPU this ran on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def _status_kib(pid: int, field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status in KiB (None off Linux or when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """Polls a process's resident set size every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.baseline = self.peak = self._read()
        self.samples = 0
        self.hwm: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # Reset the kernel's high-water mark too, so VmHWM afterwards is the exact peak (not sampled).
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False

    def _read(self) -> int:
        kib = _status_kib(self.pid, "VmRSS")
        if kib is None:
            raise RuntimeError(f"cannot read the RSS of process {self.pid}")
        return kib * 1024

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            kib = _status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.peak = max(self.peak, kib * 1024)
                self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())
        hwm = _status_kib(self.pid, "VmHWM") if self.hwm_reset else None
        self.hwm = hwm * 1024 if hwm is not None else None


# --- the service under test -----------------------------------------------------------------------


@dataclass
class Service:
    """A running API: where it listens, a key's headers, a seeded job, its process and work folder."""

    base_url: str
    headers: dict[str, str]
    job_id: str
    pid: int
    workdir: Path
    server: dict


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def _tiny_tar() -> bytes:
    """A 2-class × 2-image class-folder tar (the seeded job's dataset)."""
    from PIL import Image

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for c in range(2):
            for i in range(2):
                png = io.BytesIO()
                Image.new("RGB", (16, 16), (90 * c, 40 * i, 120)).save(png, format="PNG")
                info = tarfile.TarInfo(f"class_{c}/img_{i}.png")
                info.size = png.tell()
                png.seek(0)
                archive.addfile(info, png)
    out.seek(0)
    return out.getvalue()


def _seed(settings) -> tuple[str, str]:
    """A tenant and key, a base model, a dataset and one queued job (not enqueued); (secret, job id)."""
    from core.datasets.archive import Limits
    from core.db import make_engine, make_sessionmaker
    from core.services import api_keys, base_models, datasets, jobs
    from core.storage import make_storage

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            key, secret = api_keys.create(session, tenant_name="bench", name="bench")
            model = base_models.create(
                session,
                tenant_id=key.tenant_id,
                name="bench-dit",
                family="dit",
                location={"kind": "local", "path": "/nonexistent/bench-dit"},
            )
            dataset = datasets.create(
                session,
                tenant_id=key.tenant_id,
                name="bench-seed",
                stream=io.BytesIO(_tiny_tar()),
                storage=make_storage(settings),
                limits=Limits(100, 10 * MIB, 100.0),
                workdir=settings.cache_dir / "uploads",
            )
            job = jobs.create(
                session,
                tenant_id=key.tenant_id,
                base_model_id=model.id,
                dataset_id=dataset.id,
                method="difftune",
            )
            return secret, job.id
    finally:
        engine.dispose()


@contextmanager
def service(
    *, pg_admin_url: str = DEFAULT_PG_ADMIN, broker_url: str = DEFAULT_BROKER, upload_bytes: int = 0
) -> Iterator[Service]:
    """Start the API on a fresh database; stop it and drop everything afterwards."""
    from core.settings import Settings
    from migrations import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="difftune-bench-"))
    name = f"difftune_bench_{secrets.token_hex(4)}"
    database_url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    env = {
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "STORAGE_URL": f"file://{workdir / 'storage'}",
        "CACHE_DIR": str(workdir / "cache"),
        "SIGNING_SECRET": secrets.token_hex(16),
        # Admit the generated archive with room to spare (defaults: 2 GiB packed, 8 GiB unpacked).
        "MAX_UPLOAD_BYTES": str(max(2 * 1024**3, 2 * upload_bytes)),
        "MAX_EXTRACTED_BYTES": str(max(8 * 1024**3, 4 * upload_bytes)),
        "MAX_UPLOAD_FILES": str(max(200_000, 4 * upload_bytes // (512 * 1024))),
    }
    _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    proc: subprocess.Popen | None = None
    server_log = workdir / "server.log"
    try:
        log(f"database {name}: migrating and seeding")
        upgrade(database_url)
        settings = Settings(**{k.lower(): v for k, v in env.items()})
        secret, job_id = _seed(settings)
        port = free_port()
        server = {"app": "api.main:app", "workers": 1, "loop": "auto", "http": "auto", "access_log": False}
        command = [
            sys.executable, "-m", "uvicorn", "--factory", server["app"], "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFTUNE_")}
        child_env.update({f"DIFFTUNE_{k}": v for k, v in env.items()})
        with open(server_log, "wb") as out:
            proc = subprocess.Popen(command, cwd=REPO, env=child_env, stdout=out, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, proc, server_log)
        log(f"server pid {proc.pid} on {base_url}")
        yield Service(base_url, {"Authorization": f"Bearer {secret}"}, job_id, proc.pid, workdir, server)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:
            _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_healthy(base_url: str, proc: subprocess.Popen, server_log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}:\n{server_log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the API did not become healthy in {timeout:.0f} s:\n{server_log.read_text()[-4000:]}"
    )


# --- latency --------------------------------------------------------------------------------------


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
        "database": "postgresql",
        "machine": {**machine(), "loadavg_1m_before": round(load_before, 2)},
    }


# --- upload ---------------------------------------------------------------------------------------


def noise_png(side: int = IMAGE_SIDE) -> bytes:
    """A random-noise RGB PNG (incompressible: ~3 bytes a pixel)."""
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        out, format="PNG", compress_level=1
    )
    return out.getvalue()


def make_archive(path: Path, size_bytes: int) -> dict:
    """An uncompressed tar of class folders holding about ``size_bytes`` of valid noise PNGs.

    A few distinct PNGs are repeated under different names (``class_k/img_000123.png``), which is fast
    to write and still a real-size dataset: every file is a readable image.
    """
    side = IMAGE_SIDE if size_bytes >= 64 * MIB else 256  # small archives: still several images
    pngs = [noise_png(side) for _ in range(DISTINCT_IMAGES)]
    per_image = sum(map(len, pngs)) / len(pngs) + 1024  # tar header + padding
    count = max(CLASSES, round(size_bytes / per_image))
    with tarfile.open(path, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for i in range(count):
            data = pngs[i % len(pngs)]
            info = tarfile.TarInfo(f"class_{i % CLASSES}/img_{i:06d}.png")
            info.size, info.mtime = len(data), int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return {"images": count, "classes": CLASSES, "image_side": side, "bytes": path.stat().st_size}


class _ReadTimer(io.RawIOBase):
    """A read-only file wrapper that notes when its last byte was read (the body was sent)."""

    def __init__(self, raw):
        self.raw, self.done_at = raw, None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.raw.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if not data and self.done_at is None:
            self.done_at = time.perf_counter()
        return data


def measure_upload(svc: Service, *, size_mib: float = 1024) -> dict:
    """Stream a generated archive to ``POST /v1/datasets``; throughput and the server's RSS growth."""
    with tempfile.TemporaryDirectory(prefix="difftune-bench-upload-") as tmp:
        path = Path(tmp) / "bench-dataset.tar"
        started = time.perf_counter()
        archive = make_archive(path, int(size_mib * MIB))
        log(
            f"upload: {archive['bytes'] / MIB:.1f} MiB, {archive['images']} images "
            f"(generated in {time.perf_counter() - started:.1f} s)"
        )
        with open(path, "rb") as raw, httpx.Client(base_url=svc.base_url, headers=svc.headers) as client:
            client.get(f"/v1/jobs/{svc.job_id}")  # connection and code paths warm before the baseline
            body = _ReadTimer(raw)
            load_before = os.getloadavg()[0]
            timeout = httpx.Timeout(30.0, read=1800.0, write=60.0)
            with RssSampler(svc.pid) as rss:
                started = time.perf_counter()
                response = client.post(
                    "/v1/datasets",
                    files={"file": ("bench-dataset.tar", body, "application/x-tar")},
                    data={"name": "bench-upload"},
                    timeout=timeout,
                )
                total_s = time.perf_counter() - started
            dataset = response.json() if response.status_code == 201 else None
            if dataset is not None:
                client.delete(f"/v1/datasets/{dataset['id']}")
    send_s = (body.done_at or started + total_s) - started
    size_mib_real = archive["bytes"] / MIB
    result = {
        "measurement": "upload",
        "endpoint": "POST /v1/datasets",
        "archive": {"format": "tar (uncompressed)", "mib": round(size_mib_real, 1), **archive},
        "status": response.status_code,
        "error": None if dataset is not None else response.text[:500],
        "dataset": (
            {k: dataset.get(k) for k in ("id", "layout", "num_images", "num_classes")} if dataset else None
        ),
        "send_s": round(send_s, 2),
        "send_mib_s": round(size_mib_real / send_s, 1) if send_s > 0 else None,
        "total_s": round(total_s, 2),
        "throughput_mib_s": round(size_mib_real / total_s, 1),
        "rss_baseline_mib": round(rss.baseline / MIB, 1),
        "rss_peak_mib": round(rss.peak / MIB, 1),
        "rss_growth_mib": round((rss.peak - rss.baseline) / MIB, 1),
        "rss_hwm_growth_mib": round((rss.hwm - rss.baseline) / MIB, 1) if rss.hwm is not None else None,
        "rss_samples": rss.samples,
        "rss_interval_ms": 50,
        "target_rss_growth_mib": TARGET_RSS_GROWTH_MIB,
    }
    result["meets_target"] = dataset is not None and result["rss_growth_mib"] < TARGET_RSS_GROWTH_MIB
    result["server"], result["machine"] = (
        svc.server,
        {**machine(), "loadavg_1m_before": round(load_before, 2)},
    )
    return result


# --- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", choices=("latency", "upload", "all"), default="all")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="client connections (default 32)")
    parser.add_argument("--pools", type=int, default=8, help="httpx pools they are split over (default 8)")
    parser.add_argument("--upload-mb", type=float, default=1024, help="archive size in MiB (default 1024)")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN, help="database to CREATE DATABASE from")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER, help="Celery broker of the API")
    args = parser.parse_args(argv)
    upload_bytes = int(args.upload_mb * MIB) if args.which in ("upload", "all") else 0
    with service(
        pg_admin_url=args.pg_admin_url, broker_url=args.broker_url, upload_bytes=upload_bytes
    ) as svc:
        if args.which in ("latency", "all"):
            figures = measure_latency(
                svc,
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                connections=args.connections,
                pools=args.pools,
            )
            print(json.dumps(figures), flush=True)
        if args.which in ("upload", "all"):
            print(json.dumps(measure_upload(svc, size_mib=args.upload_mb)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
