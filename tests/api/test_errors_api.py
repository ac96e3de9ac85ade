"""Every error is application/problem+json naming the field: auth, 404, 405, 422, malformed JSON."""

from __future__ import annotations

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_missing_and_unknown_keys_are_401(client):
    body = assert_problem(client.get("/v1/jobs"), 401)
    assert "Authorization: Bearer" in body["detail"]
    response = client.get("/v1/jobs", headers={"Authorization": "Bearer dtk_wrong"})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_route_and_wrong_method(client, auth):
    assert "/v1/nothing" in assert_problem(client.get("/v1/nothing", headers=auth), 404)["detail"]
    response = client.delete("/v1/jobs", headers=auth)
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, POST"


def test_unknown_id_is_404(client, auth):
    body = assert_problem(client.get("/v1/jobs/job_nope", headers=auth), 404)
    assert "job_nope" in body["detail"]


def test_malformed_json_is_400(client, auth):
    response = client.post("/v1/jobs", headers={**auth, "content-type": "application/json"}, content=b"{oops")
    assert_problem(response, 400)


def test_validation_errors_name_fields(client, auth):
    body = {"name": "m", "family": "unet3000", "location": {"kind": "local", "path": "relative/dir"}}
    problem = assert_problem(client.post("/v1/base-models", headers=auth, json=body), 422)
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"family", "location.local.path"}
    problem = assert_problem(client.get("/v1/jobs", headers=auth, params={"limit": 0}), 422)
    assert problem["errors"][0]["field"] == "limit"


# --- bad input that once reached PostgreSQL as a 500 ---------------------------------------------


def test_nul_bytes_in_ids_cursors_and_json_are_4xx_naming_the_field(client, auth, base_model, dataset):
    assert_problem(client.get("/v1/jobs/job_%00x", headers=auth), 404)
    assert assert_problem(client.get("/v1/jobs?after=job_%00", headers=auth), 422)["errors"][0]["field"] == "after"
    body = {"base_model": base_model["id"], "dataset": dataset["id"], "metadata": {"team": "a\u0000b"},
            "hyperparameters": {"resolution": 16}}
    problem = assert_problem(client.post("/v1/jobs", headers=auth, json=body), 422)
    assert problem["errors"][0]["field"] == "metadata" and "NUL byte at team" in problem["detail"]
    body = {"base_model": base_model["id"], "dataset": dataset["id"],
            "hyperparameters": {"resolution": 16, "validation_prompts": ["ok", "bad\u0000"]}}
    problem = assert_problem(client.post("/v1/jobs", headers=auth, json=body), 422)
    assert "hyperparameters" in problem["errors"][0]["field"] and "validation_prompts.1" in problem["detail"]
    model = {"name": "x\u0000", "family": "dit", "location": {"kind": "local", "path": "/m"}}
    assert assert_problem(client.post("/v1/base-models", headers=auth, json=model), 422)["errors"][0]["field"] == "name"


def test_malformed_event_cursors_are_422(client, auth, base_model, dataset):
    body = {"base_model": base_model["id"], "dataset": dataset["id"], "hyperparameters": {"resolution": 16}}
    job = client.post("/v1/jobs", headers=auth, json=body).json()
    for cursor in ("evt_%C2%B2", "evt_99999999999999999999999", "evt_x"):  # "²".isdigit() is true in Python
        response = client.get(f"/v1/jobs/{job['id']}/events?after={cursor}", headers=auth)
        assert assert_problem(response, 422)["errors"][0]["field"] == "after"


def test_a_database_outage_is_503_not_500(settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    down = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/none",
                                       "bootstrap_tenant": None})
    with TestClient(create_app(down), raise_server_exceptions=False) as client:
        response = client.get("/v1/jobs", headers={"Authorization": "Bearer dtk_anything"})
    body = assert_problem(response, 503)
    assert "database is unavailable" in body["detail"] and response.headers["retry-after"] == "5"


def test_json_bodies_are_capped_while_they_stream(client, auth, settings):
    """A 200 MiB JSON body once cost 620 MiB in the API; now it stops at the cap (1 MiB by default)."""
    huge = b'{"base_model": "bm_x", "dataset": "ds_x", "metadata": {"a": "' + b"x" * (2 * 1024**2) + b'"}}'
    declared = client.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=huge)
    assert_problem(declared, 413)

    def chunks():  # no Content-Length: cut off while reading
        for i in range(0, len(huge), 64 * 1024):
            yield huge[i:i + 64 * 1024]

    streamed = client.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=chunks())
    assert_problem(streamed, 413)
    assert settings.max_json_bytes == 1024**2
