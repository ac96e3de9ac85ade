"""Schema-driven fuzzing (schemathesis) of every operation in the app's own OpenAPI document, on
PostgreSQL, with a real tenant key: no response is ever a 5xx, and each one is declared by the
document (status code, content type, headers, body schema; each SSE event too).

Half the cases aim at things that exist (the dataset, base model and job the fixtures made, a valid
archive, a signed download link), so the fuzzer gets past 404 and 422 into the routes' own logic.
Bounded for a 2-core machine: EXAMPLES derandomized cases per operation (schema-valid and invalid
data), no shrinking, small uploads, and the SSE stream of a queued job cut after a couple of events
or STREAM_TIMEOUT seconds.
"""

from __future__ import annotations

import io

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.python.asgi import shutdown_lifespans  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 40  # per operation
TIMEOUT = 10.0  # seconds any one request may take
STREAM_TIMEOUT = 2.0  # the SSE stream of a queued job never ends: cut after STREAM_EVENTS events or this
STREAM_EVENTS = 2
KEY = "jobs/job_x/samples/step_0000001.png"  # an object in the local store behind /v1/files
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
CONFIG = {"generation": {"deterministic": True, "with-security-parameters": False},
          "max-stream-events": STREAM_EVENTS, "request-timeout": TIMEOUT}


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, from an app that connects to nothing."""
    from api.app import create_app
    from core.settings import Settings

    app = create_app(Settings(database_url="postgresql://collect@127.0.0.1:1/none", broker_url="memory://",
                              storage_url="file:///nonexistent/difftune-collect", signing_secret="collect"))
    return [(method, path) for path, ops in app.openapi()["paths"].items() for method in ops]


@pytest.fixture
def settings(settings):
    """The test settings with a per-key rate limit the fuzzer does not reach (429 is declared anyway)."""
    if "rate_limit" in type(settings).model_fields:
        settings = type(settings)(**{**settings.model_dump(), "rate_limit": "100000/second"})
    return settings


@pytest.fixture
def known(client, auth, upload, archives, base_model) -> dict:
    """What exists for the tenant: ids by path parameter name, and a valid archive (images of the
    default resolution, so that a generated job can be valid)."""
    images = {f"class_{c}/{i}.png": archives.png((90 * c, 40 * i, 9), size=(256, 256))
              for c in range(2) for i in range(2)}
    archive = archives.zip(images)
    dataset = upload(archive)
    assert dataset.status_code == 201, dataset.text
    dataset_id = dataset.json()["id"]
    job = client.post("/v1/jobs", headers=auth, json={"base_model": base_model["id"], "dataset": dataset_id})
    assert job.status_code == 201, job.text
    known = {"dataset_id": dataset_id, "base_model_id": base_model["id"], "job_id": job.json()["id"],
             "archive": archive}
    key = client.post("/v1/api-keys", headers=auth, json={"name": "fuzz"})  # a second key, to revoke
    if key.status_code == 201:
        known["key_id"] = key.json()["id"]
    return known


@pytest.fixture
def fuzzed_app(app, settings, tmp_path, known):
    """The app an operation is fuzzed on: downloads (``/v1/files``) are served only by a local store,
    so that operation gets an app on one, holding ``KEY``, whose signed link joins ``known``."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    from api.app import create_app

    # a new Settings, not model_copy: that would keep the cached (S3) ``settings.storage``
    local = create_app(type(settings)(**{**settings.model_dump(), "storage_url": f"file://{tmp_path / 'store'}"}))
    local.state.storage.put_stream(KEY, io.BytesIO(b"grid"))
    link = urlsplit(local.state.storage.url_for(KEY, expires_in=3600))
    known.update(key=unquote(link.path.removeprefix("/v1/files/")), link=dict(parse_qsl(link.query)))
    yield lambda path: local if path.startswith("/v1/files/") else app
    shutdown_lifespans()  # the lifespans schemathesis started (each disposes its app's engine)


def aim_at_known(case, known: dict) -> None:
    """Point ``case`` at things that exist: ids in the path and the body, a valid archive, a signed
    link, and no event cursor (generated ones are never valid)."""
    for name in case.path_parameters or {}:
        case.path_parameters[name] = known.get(name, case.path_parameters[name])
    if "key" in (case.path_parameters or {}):
        case.query = {**(case.query or {}), **known["link"]}
    if case.operation.path.endswith("/events"):
        (case.query or {}).pop("after", None)
        (case.headers or {}).pop("Last-Event-ID", None)
    if isinstance(case.body, dict):
        for field in ("base_model", "dataset"):
            if field in case.body:
                case.body[field] = known[f"{field}_id"]
        if "file" in case.body:
            case.body["file"] = known["archive"]


@pytest.mark.parametrize(("method", "path"), _operations(), ids=lambda v: v.upper() if v.islower() else v)
def test_no_5xx_and_every_response_is_declared(method, path, fuzzed_app, auth, known):
    app = fuzzed_app(path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG))
    operation = schema[path][method.upper()]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    timeout = STREAM_TIMEOUT if path.endswith("/events") else TIMEOUT
    statuses: dict[int, int] = {}

    @given(case=cases, aim=st.booleans())
    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case, aim: bool) -> None:
        if aim:
            aim_at_known(case, known)
        response = case.call_and_validate(headers=dict(auth), checks=CHECKS, timeout=timeout)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    fuzz()
    print(f"{method.upper()} {path}: {dict(sorted(statuses.items()))}")  # what the cases reached (-s)
    assert sum(statuses.values()) >= min(EXAMPLES, 2)  # the cases ran
