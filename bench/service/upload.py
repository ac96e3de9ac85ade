"""Upload throughput of a generated class-folder tar to ``POST /v1/datasets`` and the server's RSS growth."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from bench.service.common import MIB, log
from bench.service.procfs import RssSampler, machine
from bench.service.server import Service

TARGET_RSS_GROWTH_MIB = 100.0
IMAGE_SIDE = 592  # a 592×592 RGB noise PNG is ~1.0 MiB and barely compresses
DISTINCT_IMAGES = 4
CLASSES = 4


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
