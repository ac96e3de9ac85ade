"""The dashboard through FastAPI's TestClient: sign-in and its cookie, CSRF, tenant scoping, the new-job
form's inline 422s, escaping and the security headers."""

from __future__ import annotations

import io
import re

import httpx
from PIL import Image

from tests.dashboard.conftest import csrf_of, key_of, sign_in


def test_sign_in_sets_an_httponly_samesite_strict_cookie_and_opens_the_pages(client, auth):
    response = sign_in(client, key_of(auth), next_url="/ui/datasets")
    assert response.status_code == 303 and response.headers["location"] == "/ui/datasets"
    cookie = [h for h in response.headers.get_list("set-cookie") if h.startswith("difftune_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # the public URL is http here
    assert key_of(auth) not in cookie  # encoded, not the raw key
    page = client.get("/ui/jobs")
    assert page.status_code == 200 and "acme" in page.text and "No jobs" in page.text


def test_the_cookie_is_secure_when_the_public_url_is_https(client, app):
    app.state.settings = app.state.settings.model_copy(update={"public_url": "https://difftune.example"})
    assert "Secure" in client.get("/ui/sign-in").headers["set-cookie"]  # so this http client never sends it back


def test_a_wrong_key_is_refused_with_a_message(client, auth):
    response = sign_in(client, "dtk_not-a-key")
    assert response.status_code == 401
    assert "unknown or revoked API key" in response.text and 'id="error-api_key"' in response.text
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_pages_without_a_session_redirect_to_the_sign_in_form(client):
    response = client.get("/ui/jobs/job_x?a=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/sign-in?next=%2Fui%2Fjobs%2Fjob_x%3Fa%3D1"
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/jobs"


def test_sign_in_never_redirects_to_another_site(client, auth):
    assert sign_in(client, key_of(auth), next_url="//evil.example/x").headers["location"] == "/ui/jobs"


def test_a_post_without_the_csrf_token_is_refused(ui, api_job):
    assert ui.post(f"/ui/jobs/{api_job}/cancel", data={}).status_code == 403
    assert ui.post(f"/ui/jobs/{api_job}/cancel", data={"csrf_token": "0" * 64}).status_code == 403
    token = csrf_of(ui.get(f"/ui/jobs/{api_job}").text)
    other_site = ui.post(f"/ui/jobs/{api_job}/cancel", data={"csrf_token": token},
                         headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403 and "another site" in other_site.text
    done = ui.post(f"/ui/jobs/{api_job}/cancel", data={"csrf_token": token}, headers={"Origin": "http://testserver"})
    assert done.status_code == 200 and "cancelled" in done.text  # followed the 303 to the job page
    assert ui.post("/ui/sign-out", data={}).status_code == 403


def test_the_api_takes_the_session_cookie_for_reads_and_with_the_csrf_header_for_writes(ui, api_job):
    assert ui.get(f"/v1/jobs/{api_job}").json()["status"] == "queued"
    refused = ui.post(f"/v1/jobs/{api_job}/cancel")
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"].replace("x-csrf-token", "X-CSRF-Token")
    token = csrf_of(ui.get("/ui/jobs").text)
    assert ui.post(f"/v1/jobs/{api_job}/cancel", headers={"X-CSRF-Token": token}).json()["status"] == "cancelled"
    ui.post("/ui/sign-out", data={"csrf_token": token})
    assert ui.get(f"/v1/jobs/{api_job}").status_code == 401


def test_another_tenants_job_and_dataset_pages_are_404(client, other_auth, api_job, api_dataset):
    assert sign_in(client, key_of(other_auth)).status_code == 303
    for path in (f"/ui/jobs/{api_job}", f"/ui/datasets/{api_dataset}", f"/ui/compare?jobs={api_job},{api_job}x"):
        page = client.get(path)
        assert page.status_code == 404 and "text/html" in page.headers["content-type"], path
        assert "no " in page.text
    assert client.get(f"/v1/jobs/{api_job}").status_code == 404
    assert api_job not in client.get("/ui/jobs").text


def test_the_new_job_form_shows_the_apis_422_messages_by_their_fields(ui, api_model, api_dataset):
    form = ui.get("/ui/jobs/new")
    assert 'placeholder="24000"' in form.text and "default 0.0001" in form.text  # the defaults shown
    data = {"csrf_token": csrf_of(form.text), "base_model": api_model, "dataset": api_dataset, "method": "difftune",
            "max_steps": "0", "resolution": "64", "bank_share": "abc"}
    response = ui.post("/ui/jobs/new", data=data)
    assert response.status_code == 422
    inline = dict(re.findall(r'<p class="field-error" id="error-([a-z_]+)">([^<]*)</p>', response.text))
    assert inline["max_steps"] == "Input should be greater than or equal to 1"
    assert "hyperparameters.max_steps" in response.text and "hyperparameters.bank_share" in response.text
    assert inline["bank_share"].startswith("Input should be a valid number")
    again = ui.post("/ui/jobs/new", data={**data, "max_steps": "20", "bank_share": ""})  # a rule of the service
    assert again.status_code == 422
    assert "larger than the dataset&#39;s smallest image side" in dict(
        re.findall(r'id="error-([a-z_]+)">([^<]*)<', again.text))["resolution"]
    created = ui.post("/ui/jobs/new", data={**data, "max_steps": "20", "bank_share": "", "resolution": "16",
                                            "name": "<b>first</b>"}, follow_redirects=False)
    assert created.status_code == 303, created.text
    job = ui.get(created.headers["location"])
    assert "&lt;b&gt;first&lt;/b&gt;" in job.text and "<b>first</b>" not in job.text  # escaped


def test_pages_carry_a_strict_csp_and_no_inline_script(ui, api_job, api_dataset):
    for path in ("/ui/jobs", f"/ui/jobs/{api_job}", "/ui/jobs/new", "/ui/datasets", f"/ui/datasets/{api_dataset}",
                 "/ui/base-models", f"/ui/compare?jobs={api_job}", "/ui/sign-in"):
        page = ui.get(path)
        assert page.status_code == 200, path
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), path
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", page.text), path  # no inline event handlers
    static = ui.get("/ui/static/job.js")
    assert static.status_code == 200 and "javascript" in static.headers["content-type"]


def test_the_openapi_document_and_docs_do_not_list_the_dashboard(client):
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]
    assert client.get("/docs").status_code == 200


def test_the_forgetting_probe_form_starts_a_probe_job_or_shows_why_not(ui, db, api_job):
    page = ui.get(f"/ui/jobs/{api_job}")
    data = {"csrf_token": csrf_of(page.text), "checkpoint_step": ""}
    refused = ui.post(f"/ui/jobs/{api_job}/forgetting-probes", data=data)
    assert refused.status_code == 422 and "has no published checkpoint yet" in refused.text
    from core.services import outputs

    outputs.create_checkpoint(db, job_id=api_job, step=10)
    db.commit()
    bad = ui.post(f"/ui/jobs/{api_job}/forgetting-probes", data={**data, "points": "1", "guidance": "1, x"})
    assert bad.status_code == 422
    inline = dict(re.findall(r'id="error-([a-z_]+)">([^<]*)<', bad.text))
    assert inline == {"guidance": "must be floats separated by commas"}
    bad = ui.post(f"/ui/jobs/{api_job}/forgetting-probes", data={**data, "points": "1", "guidance": "1, 4"})
    assert dict(re.findall(r'id="error-([a-z_]+)">([^<]*)<', bad.text)) == {
        "points": "Input should be greater than or equal to 2"}
    started = ui.post(f"/ui/jobs/{api_job}/forgetting-probes", data={**data, "points": "3", "guidance": "1, 4"},
                      follow_redirects=False)
    assert started.status_code == 303
    probe = ui.get(started.headers["location"])
    assert "forgetting_probe" in probe.text and 'id="reports"' in probe.text and api_job in probe.text
    assert ui.get(f"/v1/jobs/{started.headers['location'].rsplit('/', 1)[-1]}").json()["hyperparameters"][
        "guidance"] == [1.0, 4.0]


def test_the_base_model_form_registers_a_model_or_names_the_bad_field(ui):
    page = ui.get("/ui/base-models")
    data = {"csrf_token": csrf_of(page.text), "name": "m", "family": "dit", "kind": "local", "path": "relative"}
    refused = ui.post("/ui/base-models", data=data)
    assert refused.status_code == 422 and "location.local.path" in refused.text
    assert "String should match pattern" in dict(re.findall(r'id="error-([a-z_]+)">([^<]*)<', refused.text))["path"]
    outside = ui.post("/ui/base-models", data={**data, "path": "/etc/models"})  # not under an allowed root
    assert outside.status_code == 422 and 'id="error-path"' in outside.text
    done = ui.post("/ui/base-models", data={**data, "path": "/models/dit"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/ui/base-models#bm_")
    listing = ui.get("/ui/base-models").text
    assert "/models/dit" in listing and 'data-model-status="pending"' in listing


def test_the_dataset_page_shows_stats_and_the_thumbnail_strip(ui, api_dataset, settings):
    page = ui.get(f"/ui/datasets/{api_dataset}")
    assert page.status_code == 200 and "class_0" in page.text and "16–16 px" in page.text
    src = re.search(r'<img id="thumbnails" src="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    image = Image.open(io.BytesIO(httpx.get(src).content))
    assert image.size == (6 * 64, 64)  # 2 classes × 3 images, classes in turn
    assert settings.s3_endpoint.split("//")[1] in page.headers["content-security-policy"]  # img-src allows it


def test_odd_requests_get_4xx_pages_naming_the_field_never_a_500(ui):
    cases = {
        "/ui/jobs?status=bogus": (422, "status"),
        "/ui/jobs?after=%00": (422, "after"),
        "/ui/compare?jobs=" + ",".join(f"job_{i}" for i in range(9)): (422, "jobs"),
        "/ui/jobs/job_%00": (404, "no job"),
        "/ui/datasets/nope": (404, "no dataset"),
        "/ui/nowhere": (404, "no route"),
    }
    for path, (status, named) in cases.items():
        page = ui.get(path)
        assert page.status_code == status and named in page.text and "text/html" in page.headers["content-type"], path
    token = csrf_of(ui.get("/ui/jobs/new").text)
    as_json = ui.post("/ui/jobs/new", json={"csrf_token": token})
    assert as_json.status_code == 403  # not a form: no token read
    with_file = ui.post("/ui/jobs/new", data={"csrf_token": token}, files={"f": ("x.bin", b"x")})
    assert with_file.status_code == 400
    assert ui.post("/ui/jobs/new", data={"csrf_token": token, "max_steps": "1" * 5000}).status_code == 422
    huge = ui.post("/ui/jobs/new", content=b"a=" + b"x" * (2 * 1024 * 1024),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
