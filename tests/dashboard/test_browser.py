"""The dashboard in a real browser (Debian's chromium driven by Playwright) against the real service: the
embedded stack (API + Celery worker) with a tiny DiT. Sign in, upload a dataset and register the base model
through the pages, start a tiny job from the form, follow it to the end on its page (charts, sample grid,
checkpoints, event log), then compare it with a second job. Screenshots go to the test artifacts folder
(``$DIFFTUNE_TEST_ARTIFACTS`` or ``.cache/test-artifacts``, under ``dashboard/``).

The tests of this module run in order and share one stack and one browser page.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from worker.embedded import EmbeddedStack

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kombu.*"),
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DIFFTUNE_TEST_ARTIFACTS", REPO / ".cache" / "test-artifacts")) / "dashboard"
# A job that finishes in seconds on a CPU: a 4-image bank of 2 DDIM steps, grids and checkpoints every 10 steps.
TINY = {"batch_size": 4, "log_every": 1, "sample_every": 10, "checkpoint_every": 10, "keep_checkpoints": 2,
        "sample_steps": 4, "ema_warmup": True, "bank": {"size": 4, "batch_size": 4, "num_inference_steps": 2}}
JOB_TIMEOUT_MS = 150_000
EXPECTED = re.compile(r"Failed to load resource: the server responded with a status of (401|422)")  # refused forms


def png(seed: int, size: int = 16) -> bytes:
    import numpy as np
    from PIL import Image

    out = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The embedded service and a tiny DiT base model (2 classes, 16 px) on disk."""
    from models.tiny import build_tiny_dit_pipeline

    work = tmp_path_factory.mktemp("dashboard")
    base = build_tiny_dit_pipeline(work / "base", resolution=16, id2label={0: "a", 1: "b"})
    with EmbeddedStack(work / "service", grace=10) as stack:
        stack.work, stack.base = work, base
        yield stack


@pytest.fixture(scope="module")
def page(stack):
    """One chromium page for the module; console errors (a CSP violation, a script error) fail the test, but
    the 401 and 422 answers of the refused forms the tests send on purpose."""
    if not CHROMIUM.exists():  # a failure, not a skip: the dashboard is untested without a browser
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: run `make setup` (it installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.url)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.errors = []
        page.on("console", lambda m: m.type == "error" and not EXPECTED.match(m.text) and page.errors.append(m.text))
        page.on("pageerror", lambda err: page.errors.append(str(err)))
        yield page
        browser.close()


@pytest.fixture(autouse=True)
def no_browser_errors(request):
    yield
    if "page" in request.fixturenames:
        errors = request.getfixturevalue("page").errors
        assert not errors, errors
        errors.clear()


def wait_until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` in the page until it is truthy (``page.wait_for_function`` polls with ``eval``,
    which the dashboard's CSP forbids; DevTools' evaluate is not subject to it)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout:.0f} s: {expression}"
        page.wait_for_timeout(200)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_in_then_upload_a_dataset_with_errors_per_file(page, stack):
    page.goto("/ui/jobs")
    assert "/ui/sign-in" in page.url
    page.fill("#api_key", "dtk_wrong")
    page.click("button[type=submit]")
    assert "unknown or revoked API key" in page.inner_text("#error-api_key")
    shot(page, "sign_in")
    page.fill("#api_key", stack.api_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/jobs")

    page.goto("/ui/datasets")
    bad = write_zip(stack.work / "bad.zip", {"a/0.png": png(0), "a/1.png": b"not an image", "b/0.png": png(1)})
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-button")
    page.wait_for_selector("#upload-errors:not([hidden]) td code")
    assert page.inner_text("#upload-errors td code") == "a/1.png"
    assert "not a readable image" in page.inner_text("#upload-errors")
    shot(page, "datasets_refused")

    good = write_zip(stack.work / "shapes.zip", {f"{c}/{i}.png": png(10 * n + i) for n, c in enumerate("ab") for i in range(6)})
    page.set_input_files("#upload-file", str(good))
    page.fill("#upload-name", "shapes")
    page.click("#upload-button")
    page.wait_for_url(re.compile(r".*/ui/datasets/ds_\w+$"))
    assert page.evaluate("document.getElementById('thumbnails').complete && "
                         "document.getElementById('thumbnails').naturalWidth") == 12 * 64
    assert "12" in page.inner_text("dl.facts")
    shot(page, "dataset")


def test_register_the_base_model_and_watch_its_load_check(page, stack):
    page.goto("/ui/base-models")
    page.fill("#model-name", "tiny-dit")
    page.select_option("#family", "dit")
    page.select_option("#kind", "local")
    assert page.is_hidden("#loc-repo_id")  # only the chosen kind's inputs
    page.fill("#loc-path", "relative/path")
    page.click("#model-form button[type=submit]")
    assert "String should match pattern" in page.inner_text("#error-path")
    page.fill("#loc-path", str(stack.base))
    page.click("#model-form button[type=submit]")
    page.wait_for_selector("tr[data-model-id] .badge.ready", timeout=60_000)  # models.js follows the check
    shot(page, "base_models")


def test_start_a_tiny_job_from_the_form_and_follow_it_to_the_end(page, stack):
    page.goto("/ui/jobs/new")
    page.select_option("#base_model", index=1)
    page.select_option("#dataset", index=1)
    page.fill("#name", "diff-tuning")
    page.fill("#max_steps", "20")
    page.fill("#resolution", "16")
    page.fill("#more", json.dumps({k: v for k, v in TINY.items() if k != "batch_size"}))
    page.fill("#batch_size", "0")
    page.click("#new-job-form button[type=submit]")
    assert page.inner_text("#error-batch_size") == "Input should be greater than or equal to 1"
    shot(page, "new_job_refused")
    page.fill("#batch_size", "4")
    page.click("#new-job-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/jobs/job_\w+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    stack.jobs = [job_id, start_standard_job(stack, job_id)]  # queued behind it: the compare view's other job

    page.wait_for_selector("#job-status .badge.succeeded", timeout=JOB_TIMEOUT_MS)
    wait_until(page, "document.getElementById('job-progress').value === 20 && "
                           "document.getElementById('job-progress').max === 20")
    wait_until(page, "(document.querySelector('#chart-loss path.line.s0')?.getAttribute('d') || '')"
                           ".split('L').length >= 20")  # the total loss at every logged step
    assert page.locator("#chart-loss path.line").count() == 3  # total, target, knowledge bank
    assert page.locator("#chart-lr path.line").count() == 1 and page.locator("#chart-ips path.line").count() == 1
    wait_until(page, "document.getElementById('sample-image').complete && "
                           "document.getElementById('sample-image').naturalWidth > 0")
    assert page.get_attribute("#sample-step", "max") == "1"  # grids at steps 10 and 20
    page.fill("#sample-step", "0")
    assert page.inner_text("#sample-step-label").startswith("step 10")
    page.wait_for_selector("#checkpoints li[data-step='20'] a[href*='/v1/files/']", state="attached")
    page.wait_for_selector("#events li:has-text('job succeeded')")
    assert page.locator("#cancel-form").count() == 0
    shot(page, "job")


def start_standard_job(stack, like: str) -> str:
    """The same job with standard fine-tuning, through the REST API."""
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.api_key}"}) as client:
        job = client.get(f"/v1/jobs/{like}").json()
        body = {"base_model": job["base_model"], "dataset": job["dataset"], "method": "standard",
                "metadata": {"name": "standard"}, "hyperparameters": {"max_steps": 20, "resolution": 16, **TINY}}
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]


def test_compare_the_diff_tuning_job_with_a_standard_one(page, stack):
    page.goto(f"/ui/jobs/{stack.jobs[1]}")
    page.wait_for_selector("#job-status .badge.succeeded", timeout=JOB_TIMEOUT_MS)
    page.goto("/ui/jobs")
    shot(page, "jobs")
    for job_id in stack.jobs:
        page.check(f"input[name=jobs][value={job_id}]")
    page.click("#jobs-form button[type=submit]")
    page.wait_for_url("**/ui/compare?**")
    wait_until(page, "document.querySelectorAll('#compare-chart path.line').length === 2")
    wait_until(page, "[...document.querySelectorAll('#compare-grids img')]"
                           ".every((img) => !img.hidden && img.complete && img.naturalWidth > 0)")
    differs = page.locator("h2:has-text('Hyperparameters that differ') + .table-wrap th[scope=row]").all_inner_texts()
    assert "method" in differs and "resolution" not in differs
    page.select_option("#compare-figure", "loss_bank")
    assert page.locator("#compare-chart path.line").count() == 1  # only Diff-Tuning has a knowledge bank
    shot(page, "compare")
