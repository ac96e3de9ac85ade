"""The OpenAPI document declares every operation's errors as application/problem+json with one Problem
schema, and the problems the app really sends match that schema."""

from __future__ import annotations

import pytest

PROBLEM = "application/problem+json"
REF = "#/components/schemas/Problem"


@pytest.fixture
def spec(client) -> dict:
    """The document as served."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def errors_of(op: dict) -> set[int]:
    return {int(code) for code in op["responses"] if int(code) >= 400}


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/v1/jobs", {400, 401, 413, 422, 429, 503}),  # unknown ids in the body are 422, not 404
    ("GET", "/v1/jobs/{job_id}", {401, 404, 422, 429, 503}),
    ("POST", "/v1/jobs/{job_id}/cancel", {401, 404, 409, 413, 422, 429, 503}),
    ("POST", "/v1/jobs/{job_id}/forgetting-probes", {400, 401, 404, 413, 422, 429, 503}),
    ("POST", "/v1/datasets", {400, 401, 413, 422, 429, 503}),
    ("DELETE", "/v1/datasets/{dataset_id}", {401, 404, 409, 422, 429, 503}),
    ("GET", "/v1/base-models", {401, 422, 429, 503}),
    ("GET", "/v1/files/{key}", {403, 404, 422}),  # a signed link, no API key
    ("GET", "/readyz", {503}),
    ("GET", "/healthz", set()),
])
def test_operations_declare_the_errors_they_can_return(spec, method, path, expected):
    assert errors_of(spec["paths"][path][method.lower()]) == expected


def test_every_route_specific_entry_names_an_operation(spec):
    from api.openapi import ROUTE_CONTENT, ROUTE_ERRORS

    for method, path in [*ROUTE_ERRORS, *ROUTE_CONTENT]:
        assert method in spec["paths"].get(path, {}), f"api.openapi names {method.upper()} {path}, which is gone"


def test_every_error_response_is_problem_json_and_nothing_else(spec):
    for method, path, op in operations(spec):
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert response["content"] == {PROBLEM: {"schema": {"$ref": REF}}}, (method, path, code)
                assert response["description"], (method, path, code)
    assert "HTTPValidationError" not in str(spec) and "ValidationError" not in spec["components"]["schemas"]


def test_every_authenticated_v1_operation_declares_401_and_429_with_retry_after(spec):
    authenticated = [(m, p, op) for m, p, op in operations(spec) if p.startswith("/v1/") and op.get("security")]
    assert len(authenticated) >= 15 and all(not p.startswith("/v1/files/") for _, p, _ in authenticated)
    for method, path, op in authenticated:
        assert {401, 429, 503} <= errors_of(op), (method, path)
        retry_after = op["responses"]["429"]["headers"]["Retry-After"]
        assert retry_after["required"] is True and retry_after["schema"] == {"type": "integer"}
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    paths_with_ids = [(m, p, op) for m, p, op in operations(spec) if "{" in p]
    assert all(404 in errors_of(op) for _, _, op in paths_with_ids)


def test_problem_schema_matches_what_api_problems_emits(spec):
    schemas = spec["components"]["schemas"]
    problem = schemas["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail"]
    assert set(problem["properties"]) == {"type", "title", "status", "detail", "instance", "errors"}
    assert problem["properties"]["status"]["type"] == "integer"
    assert problem["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/ProblemError"}
    assert problem.get("additionalProperties", True) is True  # extension members such as `job`, `checks`
    error = schemas["ProblemError"]
    assert set(error["properties"]) == {"field", "file", "message"} and error["additionalProperties"] is False


def test_successful_bodies_that_are_not_json_are_declared(spec):
    events = spec["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert set(events) == {"application/json", "text/event-stream"}
    assert events["text/event-stream"]["schema"]["required"] == ["event", "data"]
    assert set(spec["paths"]["/v1/files/{key}"]["get"]["responses"]["200"]["content"]) == {"*/*"}


def test_the_document_is_valid_openapi(spec):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(spec)


def test_problems_the_app_sends_match_the_schema(client, auth, archives, spec):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator({"$ref": REF, "components": spec["components"]})
    huge = b'{"metadata": {"a": "' + b"x" * (2 * 1024**2) + b'"}}'
    bad_archive = archives.zip(archives.class_folders(), symlinks={"class_0/link.png": "/etc/passwd"})
    responses = {
        401: client.get("/v1/jobs"),
        404: client.get("/v1/jobs/job_nope", headers=auth),
        405: client.delete("/v1/jobs", headers=auth),
        400: client.post("/v1/jobs", headers={**auth, "content-type": "application/json"}, content=b"{oops"),
        413: client.post("/v1/jobs", headers={**auth, "content-type": "application/json"}, content=huge),
        422: client.post("/v1/base-models", headers=auth, json={"name": "m", "family": "unet3000"}),
    }
    responses["upload"] = client.post("/v1/datasets", headers=auth, files={"file": ("d.zip", bad_archive)})
    for status, response in responses.items():
        assert response.status_code == (422 if status == "upload" else status), response.text
        assert response.headers["content-type"] == PROBLEM, (status, response.text)
        body = response.json()
        assert not list(validator.iter_errors(body)), (status, body)
    assert responses[422].json()["errors"][0].keys() == {"field", "message"}
    assert responses["upload"].json()["errors"][0].keys() == {"file", "message"}
    assert not list(validator.iter_errors({"type": "about:blank", "title": "x", "status": 422, "detail": "d",
                                           "errors": [{"field": "a", "message": "b"}]}))
    assert list(validator.iter_errors({"type": "about:blank", "title": "x", "status": 422}))  # no detail
    assert list(validator.iter_errors({"type": "about:blank", "title": "x", "status": 422, "detail": "d",
                                       "errors": [{"where": "a"}]}))  # an unknown member of an error
