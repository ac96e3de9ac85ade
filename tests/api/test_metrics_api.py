"""``GET /metrics``: Prometheus series for requests, uploads, jobs, queues and worker heartbeats, with no
tenant or resource ids, behind the operator's token when one is set."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.app import create_app
from core.services import jobs


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def job_body(base_model, dataset) -> dict:
    return {"base_model": base_model["id"], "dataset": dataset["id"], "hyperparameters": {"max_steps": 5,
                                                                                          "resolution": 16}}


def test_metrics_count_jobs_queues_requests_uploads_and_heartbeats(client, auth, upload, archives, job_body, db,
                                                                   redis_client):
    archive = archives.zip(archives.class_folders(classes=2, per_class=2))
    assert upload(archive).status_code == 201
    ids = [client.post("/v1/jobs", headers=auth, json=job_body).json()["id"] for _ in range(3)]
    jobs.claim(db, job_id=ids[0], worker="gpu-host-1:42")
    client.get(f"/v1/jobs/{ids[1]}", headers=auth)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("difftune_jobs", (("status", "queued"),))] == 2
    assert got[("difftune_jobs", (("status", "running"),))] == 1
    assert got[("difftune_jobs", (("status", "failed"),))] == 0
    age = got[("difftune_worker_heartbeat_age_seconds", (("worker", "gpu-host-1:42"),))]
    assert 0 <= age < 60
    assert got[("difftune_broker_queue_messages", (("queue", "gpu"),))] == len(redis_client.lrange("gpu", 0, -1)) > 0
    # uploads: the dataset fixture's archive and this one
    assert got[("difftune_upload_bytes_total", (("kind", "dataset"),))] >= len(archive)
    route = (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "200"))
    assert got[("difftune_http_request_duration_seconds_count", route)] == 1
    assert ("difftune_http_request_duration_seconds_bucket", (("le", "+Inf"), *route)) in got
    for secret in (*ids, job_body["dataset"], job_body["base_model"], "acme"):  # nothing names a tenant's things
        assert secret not in response.text


def test_metrics_need_the_operators_token_when_one_is_set(settings, db, redis_client):
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr("s3cret")}))
    with TestClient(app) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_several_api_processes_are_summed_under_the_multiprocess_directory(tmp_path):
    """As the API image runs it (uvicorn --workers 2): each process writes its series to the shared folder
    and one scrape answers their sum."""
    import os
    import subprocess
    import sys

    record = ("from prometheus_client import CollectorRegistry; from api.metrics import RequestMetrics; "
              "m = RequestMetrics(CollectorRegistry()); m.upload_bytes.labels('dataset').inc(100); "
              "m.latency.labels('GET', '/v1/jobs', '200').observe(0.2)")
    scrape = "from prometheus_client import CollectorRegistry; from api.metrics import exposition; " \
             "print(exposition(CollectorRegistry(), None).decode())"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", record], env=env, check=True, timeout=60)
    text = subprocess.run([sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True,
                          text=True).stdout
    got = samples(text)
    assert got[("difftune_upload_bytes_total", (("kind", "dataset"),))] == 200
    assert got[("difftune_http_request_duration_seconds_count",
                (("method", "GET"), ("route", "/v1/jobs"), ("status", "200")))] == 2
