"""Webhooks against a receiver on loopback: a real job's events arrive signed (Standard Webhooks) and in
order, failures are retried with back-off and then marked failed, and targets inside the service's own
network are refused at submission and again after DNS."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update
from standardwebhooks import Webhook

from core.tables import WebhookDelivery, utcnow


@pytest.fixture
def receiver():
    """An HTTP server on 127.0.0.1 that records every POST and answers ``answers`` in turn (then 204)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            server.paths.append(self.path)
            self.send_response(server.answers.pop(0) if server.answers else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.received, server.answers, server.paths = [], [], []
    server.url = f"http://127.0.0.1:{server.server_port}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture
def settings(settings):
    """This API may register loopback receivers (the operator allowed private targets)."""
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture
def private_worker(worker_ctx, monkeypatch):
    """The worker's context with private targets allowed too, and two attempts per delivery."""
    from worker import context as context_module

    monkeypatch.setenv("DIFFTUNE_WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("DIFFTUNE_WEBHOOK_MAX_ATTEMPTS", "2")
    context_module.context.cache_clear()
    return context_module.context()


def deliveries(client, auth, job_id) -> list[dict]:
    response = client.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth, params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def deliver_pending(client, auth, job_id) -> None:
    from worker.webhook_delivery import deliver

    for delivery in deliveries(client, auth, job_id):
        if delivery["status"] == "pending":
            deliver(delivery["id"])


def test_a_jobs_events_arrive_signed_and_in_order(make_job, private_worker, client, auth, other_auth, receiver,
                                                  redis_client):
    from worker.pipeline import run

    job = make_job({"webhook": {"url": receiver.url}})
    assert job["webhook"] == {"url": receiver.url, "events": None}
    assert run(job["id"]) == "succeeded"
    queued = [json.loads(m)["headers"]["task"] for m in redis_client.lrange("webhooks", 0, -1)]
    assert queued and set(queued) == {"worker.webhook_tasks.deliver_webhook"}  # sent as each change committed
    deliver_pending(client, auth, job["id"])
    secret = client.get("/v1/webhooks/secret", headers=auth).json()["secret"]
    assert secret.startswith("whsec_") and client.get("/v1/webhooks/secret", headers=other_auth).json()["secret"] != secret
    events = []
    for headers, body in receiver.received:
        payload = Webhook(secret).verify(body, headers)  # raises unless signed with the tenant's secret
        assert headers["webhook-id"].startswith("whd_") and payload["data"]["job_id"] == job["id"]
        events.append((payload["type"], payload["data"].get("checkpoint", payload["data"].get("sample", {})).get("step")))
    assert events == [("job.running", None), ("job.checkpoint", 3), ("job.checkpoint", 6), ("job.sample", 6),
                      ("job.succeeded", None)]
    log = deliveries(client, auth, job["id"])
    assert [d["status"] for d in log] == ["delivered"] * 5 and all(d["response_status"] == 204 for d in log)
    assert client.get(f"/v1/jobs/{job['id']}/webhook-deliveries", headers=other_auth).status_code == 404
    with pytest.raises(Exception, match="No matching signature"):  # a rotated secret signs what comes next
        Webhook(client.post("/v1/webhooks/secret", headers=auth).json()["secret"]).verify(*reversed(receiver.received[0]))


def test_a_failing_receiver_is_retried_then_given_up(make_job, private_worker, client, auth, receiver, db):
    receiver.answers = [500, 503]
    job = make_job({"webhook": {"url": receiver.url, "events": ["job.cancelled"]}})
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["status"] == "cancelled"
    deliver_pending(client, auth, job["id"])
    [first] = deliveries(client, auth, job["id"])
    assert (first["status"], first["attempts"], first["response_status"]) == ("pending", 1, 500)
    assert first["error"] == "the receiver answered 500" and first["next_attempt_at"] is not None
    db.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))  # the 5 s back-off has passed
    db.commit()
    deliver_pending(client, auth, job["id"])
    [last] = deliveries(client, auth, job["id"])
    assert (last["status"], last["attempts"], last["response_status"]) == ("failed", 2, 503)
    assert len(receiver.received) == 2 and json.loads(receiver.received[0][1])["type"] == "job.cancelled"


def test_the_tenants_endpoint_gets_the_events_too_signed_and_once_per_url(make_job, private_worker, client, auth,
                                                                         receiver):
    endpoint = receiver.url + "/tenant"
    assert client.put("/v1/webhooks/endpoint", headers=auth, json={"url": endpoint}).status_code == 200
    job = make_job({"webhook": {"url": receiver.url, "events": ["job.cancelled"]}})
    same = make_job({"webhook": {"url": endpoint}})
    for queued in (job, same):
        assert client.post(f"/v1/jobs/{queued['id']}/cancel", headers=auth).json()["status"] == "cancelled"
        deliver_pending(client, auth, queued["id"])
    # the first job's event to its webhook and to the endpoint (staged in the same millisecond: either
    # order), then the second job's once
    assert sorted(receiver.paths[:2]) == ["/hooks", "/hooks/tenant"] and receiver.paths[2:] == ["/hooks/tenant"]
    secret = client.get("/v1/webhooks/secret", headers=auth).json()["secret"]
    payloads = [Webhook(secret).verify(body, headers) for headers, body in receiver.received]
    assert [(p["type"], p["data"]["job_id"]) for p in payloads] == [
        ("job.cancelled", job["id"]), ("job.cancelled", job["id"]), ("job.cancelled", same["id"])]
    assert len({headers["webhook-id"] for headers, _ in receiver.received}) == 3
    assert sorted((d["target"], d["url"], d["status"]) for d in deliveries(client, auth, job["id"])) == [
        ("job", receiver.url, "delivered"), ("tenant", endpoint, "delivered")]
    assert [(d["target"], d["status"]) for d in deliveries(client, auth, same["id"])] == [("both", "delivered")]


def test_private_targets_are_refused_unless_the_operator_allows_them(make_job, worker_ctx, client, auth, receiver,
                                                                     settings, app):
    from worker.webhook_delivery import deliver

    app.state.settings = settings.model_copy(update={"webhook_allow_private": False})
    for url, why in [("http://10.0.0.7/hook", "10.0.0.7, a private"), ("ftp://example.com/x", "http:// or https://"),
                     ("http://user:pw@example.com/x", "credentials")]:
        response = client.post("/v1/jobs", headers=auth, json={**_body(make_job), "webhook": {"url": url}})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "webhook.url", response.text
        assert why in response.json()["errors"][0]["message"]
    # a host name passes submission, but it resolves to loopback: refused before any request, not retried
    job = make_job({"webhook": {"url": f"http://localhost:{receiver.server_port}/hooks"}})
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    [delivery] = deliveries(client, auth, job["id"])
    assert deliver(delivery["id"]) == "failed" and receiver.received == []
    [delivery] = deliveries(client, auth, job["id"])
    assert delivery["attempts"] == 1 and "127.0.0.1, a private, loopback or reserved address" in delivery["error"]


def _body(make_job) -> dict:
    job = make_job()
    return {"base_model": job["base_model"], "dataset": job["dataset"]}
