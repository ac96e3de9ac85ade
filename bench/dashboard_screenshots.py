"""Screenshots of the web dashboard for the README, from real tiny jobs:
``python -m bench.dashboard_screenshots [--work .cache/demo] [--out docs/images] [--steps 300]``.

Builds (or reuses) the digits demo's base model (:mod:`bench.demo`: a small DiT pre-trained on digits 0-4),
starts the embedded service and, through the REST API, uploads 10 shots of each of digits 5-9 and runs a
Diff-Tuning job and a standard fine-tuning job of the same steps. Then Debian's chromium (Playwright) signs in
to the dashboard and captures a job's page (``dashboard_job.png``) and the compare view of the two jobs
(``dashboard_compare.png``), each quantised to a palette PNG under 200 KB. About 5 minutes on a 2-core CPU
the first time (the base model), 3 afterwards.
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
MAX_BYTES = 200 * 1024


def run_jobs(work: Path, stack, steps: int) -> list[str]:
    """The Diff-Tuning and the standard job of the digits demo through the REST API; their ids once both ended."""
    from bench.demo import build_base_model, demo_config, prepare_domains
    from difftune_client import Client

    domains = prepare_domains(work / "data")
    base = build_base_model(work, domains["source"], work / "cache")
    hyperparameters = demo_config(str(base), max_steps=steps, checkpoint_every=steps // 2, sample_every=steps // 6,
                                  log_every=5).model_dump(mode="json", exclude={"base_model", "family", "method"})
    with Client(stack.url, stack.api_key) as client:
        dataset = client.datasets.upload(domains["target"], name="digits 5-9, 10 shots")
        model = client.base_models.create("digits-0-4-dit", "dit", {"kind": "local", "path": str(base)})
        jobs = [client.jobs.create(model, dataset, method=method, hyperparameters=hyperparameters,
                                   metadata={"name": f"digits 5-9 · {method}"}) for method in ("difftune", "standard")]
        for job in jobs:
            finished = client.jobs.wait(job.id, timeout=1800)
            if finished.status != "succeeded":
                raise RuntimeError(f"job {job.id} {finished.status}: {finished.error}")
    return [job.id for job in jobs]


def settle(page, expression: str, timeout: float = 30.0) -> None:
    """Wait until ``expression`` holds in the page (polled from DevTools: the page's CSP forbids eval)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        page.wait_for_timeout(200)


def small_png(png: bytes, path: Path) -> int:
    """Save ``png`` as a palette PNG, with fewer colours until it is under ``MAX_BYTES``; its size."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colors in (128, 64, 32):
        out = io.BytesIO()
        image.quantize(colors=colors, dither=Image.Dither.NONE).save(out, format="PNG", optimize=True)
        if out.tell() < MAX_BYTES:
            break
    path.write_bytes(out.getvalue())
    return out.tell()


def capture(url: str, api_key: str, jobs: list[str], out: Path) -> dict[str, int]:
    """Sign in with chromium and save the job page and the compare view; their sizes in bytes."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 1500}, base_url=url)
        page.goto("/ui/sign-in")
        page.fill("#api_key", api_key)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/ui/jobs$"))
        page.goto(f"/ui/jobs/{jobs[0]}")
        settle(page, "document.querySelectorAll('#chart-loss path.line').length === 3 && "
                     "document.getElementById('sample-image').complete && "
                     "document.getElementById('sample-image').naturalWidth > 0")
        sizes["dashboard_job.png"] = small_png(page.screenshot(), out / "dashboard_job.png")
        page.goto(f"/ui/compare?jobs={jobs[0]},{jobs[1]}")
        settle(page, "document.querySelectorAll('#compare-chart path.line').length === 2 && "
                     "[...document.querySelectorAll('#compare-grids img')].every((i) => i.complete && i.naturalWidth > 0)")
        page.locator("#compare-chart").scroll_into_view_if_needed()
        sizes["dashboard_compare.png"] = small_png(page.screenshot(), out / "dashboard_compare.png")
        browser.close()
    return sizes


def main(argv: list[str] | None = None) -> int:
    from worker.embedded import EmbeddedStack

    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(".cache/demo"), help="base model and data (reused)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--steps", type=int, default=300, help="steps of each job (default 300)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    with tempfile.TemporaryDirectory(prefix="difftune-screens-") as home, EmbeddedStack(Path(home)) as stack:
        jobs = run_jobs(work, stack, args.steps)
        sizes = capture(stack.url, stack.api_key, jobs, args.out)
    for name, size in sizes.items():
        print(f"{args.out / name}: {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
