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
