"""The tenant's webhook endpoint over REST: set, read, replace, remove; the per-job webhook's validation;
tenants apart; every job event of the tenant staged for it as well as for the job's own webhook (once
when they are the same URL), and both in the job's delivery log."""

from __future__ import annotations

import pytest

ENDPOINT = "/v1/webhooks/endpoint"
TENANT_URL = "https://hooks.example.com/tenant"
JOB_URL = "https://ci.example.com/job"


@pytest.fixture
def job_body(base_model, dataset) -> dict:
    return {"base_model": base_model["id"], "dataset": dataset["id"],
            "hyperparameters": {"max_steps": 20, "resolution": 16}}


def deliveries(client, auth, job_id: str) -> list[dict]:
    response = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth, params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def cancelled_job(client, auth, body: dict) -> dict:
    """A job created from ``body`` and cancelled while queued (a ``job.cancelled`` event)."""
    job = client.post("/v1/jobs", headers=auth, json=body)
    assert job.status_code == 201, job.text
    cancel = client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=auth)
    assert cancel.json()["status"] == "cancelled", cancel.text
    return job.json()


def test_set_read_replace_and_remove(client, auth):
    missing = client.get(ENDPOINT, headers=auth)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert "no webhook endpoint" in missing.json()["detail"]

    made = client.put(ENDPOINT, headers=auth, json={"url": TENANT_URL})
    assert made.status_code == 200, made.text
    assert made.json()["object"] == "webhook.endpoint"
    assert (made.json()["url"], made.json()["events"]) == (TENANT_URL, None)
    assert client.get(ENDPOINT, headers=auth).json() == made.json()

    replaced = client.put(ENDPOINT, headers=auth, json={"url": JOB_URL, "events": ["job.failed", "job.succeeded"]})
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["url"], replaced.json()["events"]) == (JOB_URL, ["job.failed", "job.succeeded"])
    assert replaced.json()["created_at"] == made.json()["created_at"]
    assert replaced.json()["updated_at"] > made.json()["updated_at"]
    assert client.get(ENDPOINT, headers=auth).json() == replaced.json()

    gone = client.delete(ENDPOINT, headers=auth)
    assert gone.status_code == 204 and gone.content == b""
    assert client.get(ENDPOINT, headers=auth).status_code == 404
    again = client.delete(ENDPOINT, headers=auth)
    assert again.status_code == 404 and again.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"url": "ftp://example.com/x"}, "url", "http:// or https://"),
    ({"url": "http://user:pw@example.com/x"}, "url", "credentials"),
    ({"url": "http://10.0.0.7/hook"}, "url", "10.0.0.7, a private"),
    ({"url": "https://" + "x" * 2000 + ".com"}, "url", "2000"),
    ({"events": ["job.running"]}, "url", ""),
    ({"url": TENANT_URL, "events": []}, "events", ""),
    ({"url": TENANT_URL, "events": ["job.exploded"]}, "events", "job.running"),
    ({"url": TENANT_URL, "secret": "x"}, "secret", ""),
])
def test_invalid_endpoints_name_the_field(client, auth, body, field, message):
    response = client.put(ENDPOINT, headers=auth, json=body)
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"].startswith(field) and message in error["message"], error
    assert client.get(ENDPOINT, headers=auth).status_code == 404  # nothing stored


def test_the_operators_allow_list_applies(client, auth, app, settings):
    app.state.settings = settings.model_copy(update={"webhook_allowed_hosts": ["example.com"]})
    assert client.put(ENDPOINT, headers=auth, json={"url": TENANT_URL}).status_code == 200
    refused = client.put(ENDPOINT, headers=auth, json={"url": "https://evil.test/x"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "url"
    assert "allow-list" in refused.json()["errors"][0]["message"]
    assert client.get(ENDPOINT, headers=auth).json()["url"] == TENANT_URL


def test_another_tenant_never_sees_or_changes_it(client, auth, other_auth):
    assert client.put(ENDPOINT, headers=auth, json={"url": TENANT_URL}).status_code == 200
    assert client.get(ENDPOINT, headers=other_auth).status_code == 404
    assert client.delete(ENDPOINT, headers=other_auth).status_code == 404
    assert client.put(ENDPOINT, headers=other_auth, json={"url": JOB_URL}).status_code == 200
    assert client.get(ENDPOINT, headers=auth).json()["url"] == TENANT_URL
    assert client.delete(ENDPOINT, headers=other_auth).status_code == 204
    assert client.get(ENDPOINT, headers=auth).json()["url"] == TENANT_URL
    assert client.get(ENDPOINT).status_code == 401


def test_job_events_go_to_the_endpoint_and_the_jobs_webhook(client, auth, job_body):
    before = cancelled_job(client, auth, {**job_body, "webhook": {"url": JOB_URL}})
    assert [d["target"] for d in deliveries(client, auth, before["id"])] == ["job"]  # no endpoint yet

    client.put(ENDPOINT, headers=auth, json={"url": TENANT_URL})
    both = cancelled_job(client, auth, {**job_body, "webhook": {"url": JOB_URL}})
    log = deliveries(client, auth, both["id"])
    assert sorted((d["target"], d["url"], d["event"], d["status"]) for d in log) == [
        ("job", JOB_URL, "job.cancelled", "pending"), ("tenant", TENANT_URL, "job.cancelled", "pending")]
    assert log[0]["payload"] == log[1]["payload"] and log[0]["id"] != log[1]["id"]
    assert log[0]["payload"]["data"]["kind"] == "tune" and log[0]["payload"]["data"]["job_id"] == both["id"]

    only_tenant = cancelled_job(client, auth, job_body)  # a job without a webhook of its own
    assert [(d["target"], d["url"]) for d in deliveries(client, auth, only_tenant["id"])] == [("tenant", TENANT_URL)]

    same = cancelled_job(client, auth, {**job_body, "webhook": {"url": TENANT_URL}})  # the same URL: once
    assert [(d["target"], d["url"]) for d in deliveries(client, auth, same["id"])] == [("both", TENANT_URL)]

    plan = cancelled_job(client, auth, {**job_body, "dry_run": True})  # every job kind
    [delivery] = deliveries(client, auth, plan["id"])
    assert delivery["target"] == "tenant" and delivery["payload"]["data"]["kind"] == plan["kind"] != "tune"

    assert [d["target"] for d in deliveries(client, auth, before["id"])] == ["job"]  # staged before: unchanged


def test_each_target_gets_the_events_it_asked_for(client, auth, job_body):
    client.put(ENDPOINT, headers=auth, json={"url": TENANT_URL, "events": ["job.succeeded", "job.failed"]})
    job = cancelled_job(client, auth, {**job_body, "webhook": {"url": JOB_URL}})
    assert [d["target"] for d in deliveries(client, auth, job["id"])] == ["job"]

    client.put(ENDPOINT, headers=auth, json={"url": TENANT_URL, "events": ["job.cancelled"]})
    job = cancelled_job(client, auth, {**job_body, "webhook": {"url": TENANT_URL, "events": ["job.succeeded"]}})
    assert [d["target"] for d in deliveries(client, auth, job["id"])] == ["tenant"]  # same URL, only its wish

    assert client.delete(ENDPOINT, headers=auth).status_code == 204
    job = cancelled_job(client, auth, job_body)
    assert deliveries(client, auth, job["id"]) == []


def test_another_tenants_jobs_never_reach_the_endpoint(client, auth, other_auth, archives, db):
    from sqlalchemy import select

    from core.tables import WebhookDelivery

    client.put(ENDPOINT, headers=auth, json={"url": TENANT_URL})
    dataset = client.post("/v1/datasets", headers=other_auth,
                          files={"file": ("d.zip", archives.zip(archives.class_folders()))}).json()
    model = client.post("/v1/base-models", headers=other_auth, json={
        "name": "m", "family": "dit", "location": {"kind": "s3", "uri": "s3://models/tiny-dit"}}).json()
    theirs = cancelled_job(client, other_auth, {"base_model": model["id"], "dataset": dataset["id"],
                                                "hyperparameters": {"max_steps": 20, "resolution": 16}})
    assert deliveries(client, other_auth, theirs["id"]) == []
    assert db.scalars(select(WebhookDelivery.url)).all() == []
