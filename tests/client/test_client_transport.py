"""The client's HTTP behaviour on a stub transport: retries (429/503 with Retry-After, dropped
connections), Idempotency-Key, SSE resumption, downloads, error messages, imports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest

from difftune_client import ApiConnectionError, Client, Invalid, RateLimited, Unavailable
from difftune_client.errors import error_from

JOB = {"id": "job_1", "status": "queued", "method": "difftune", "created_at": "2026-01-01T00:00:00Z"}


def stub(handler: Callable[[httpx.Request], httpx.Response], **kwargs) -> tuple[Client, list[float]]:
    """A client whose requests ``handler`` answers; returns it and the list of its sleeps."""
    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://api.test")
    client = Client(api_key="dtk_test", http=http, **kwargs)
    sleeps: list[float] = []
    client._core.sleep = sleeps.append
    return client, sleeps


def problem(status: int, detail: str, headers: dict | None = None, request: httpx.Request | None = None,
            **body) -> httpx.Response:
    return httpx.Response(status, headers={"Content-Type": "application/problem+json", **(headers or {})},
                          json={"type": "about:blank", "title": "t", "status": status, "detail": detail, **body},
                          request=request)


def test_429_and_503_are_retried_after_retry_after():
    answers = [problem(429, "slow down", {"Retry-After": "2"}), problem(503, "busy", {"Retry-After": "1"}),
               httpx.Response(200, json=JOB)]
    seen: list[httpx.Request] = []

    def handler(request):
        seen.append(request)
        return answers.pop(0)

    client, sleeps = stub(handler)
    assert client.jobs.get("job_1").id == "job_1"
    assert sleeps == [2.0, 1.0] and len(seen) == 3
    assert seen[0].headers["Authorization"] == "Bearer dtk_test" and seen[0].url == "http://api.test/v1/jobs/job_1"


def test_retries_are_bounded_and_the_last_answer_is_raised():
    client, sleeps = stub(lambda request: problem(429, "over the limit", {"Retry-After": "3"}), max_retries=2)
    with pytest.raises(RateLimited) as err:
        client.jobs.get("job_1")
    assert err.value.retry_after == 3.0 and err.value.status == 429 and sleeps == [3.0, 3.0]
    client, sleeps = stub(lambda request: problem(503, "down", {"Retry-After": "600"}))
    with pytest.raises(Unavailable) as err:  # longer than max_retry_wait: the caller decides
        client.jobs.get("job_1")
    assert err.value.retry_after == 600 and sleeps == []


def test_a_post_is_retried_only_with_an_idempotency_key():
    keys: list[str | None] = []

    def handler(request):
        keys.append(request.headers.get("Idempotency-Key"))
        if len(keys) == 1:
            return problem(503, "broker down", {"Retry-After": "0"})
        return httpx.Response(201, json=JOB) if request.url.path == "/v1/jobs" else problem(503, "again")

    client, _ = stub(handler)
    job = client.jobs.create("bm_1", "ds_1", hyperparameters={"max_steps": 5})
    assert job.id == "job_1" and keys[0] == keys[1] and keys[0].startswith("difftune-client-")
    keys.clear()
    with pytest.raises(Unavailable):  # cancel carries no key: a 503 is not retried
        client.jobs.cancel("job_1")
    assert len(keys) == 1


def test_connection_failures_of_reads_are_retried():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=JOB)

    client, sleeps = stub(handler)
    assert client.jobs.get("job_1").id == "job_1" and sleeps == [0.5, 1.0]
    client, _ = stub(lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")), max_retries=1)
    with pytest.raises(ApiConnectionError, match="ConnectError"):
        client.jobs.get("job_1")


class Dropping(httpx.SyncByteStream):
    """A body that breaks off after ``chunks`` (a dropped connection)."""

    def __init__(self, chunks: list[bytes], drop: bool = True):
        self.chunks, self.drop = chunks, drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.ReadError("connection reset")


def frame(n: int, message: str) -> bytes:
    event = {"id": f"evt_{n}", "created_at": "2026-01-01T00:00:00Z", "type": "status", "message": message}
    return f"id: evt_{n}\nevent: status\ndata: {json.dumps(event)}\n\n".encode()


def test_an_event_stream_resumes_from_the_last_event_after_a_drop():
    requests: list[httpx.Request] = []

    def handler(request):
        requests.append(request)
        sse = {"Content-Type": "text/event-stream"}
        if len(requests) == 1:
            return httpx.Response(200, headers=sse, stream=Dropping([frame(1, "queued"), b": keep-alive\n\n",
                                                                     frame(2, "running")]))
        return httpx.Response(200, headers=sse, stream=Dropping(
            [frame(3, "succeeded"), b'event: end\ndata: {"status": "succeeded"}\n\n'], drop=False))

    client, sleeps = stub(handler)
    stream = client.jobs.events("job_1", stream=True)
    assert [e.message for e in stream] == ["queued", "running", "succeeded"] and stream.status == "succeeded"
    assert "Last-Event-ID" not in requests[0].headers and requests[1].headers["Last-Event-ID"] == "evt_2"
    assert requests[1].url.params["stream"] == "true" and sleeps == [0.5]


def test_an_event_stream_gives_up_after_repeated_drops():
    client, _ = stub(lambda request: httpx.Response(200, stream=Dropping([])))
    stream = client.jobs.events("job_1", stream=True)
    stream.max_reconnects = 2
    with pytest.raises(ApiConnectionError, match="2 reconnects"):
        list(stream)


def test_downloads_of_other_hosts_carry_no_key_and_restart_after_a_drop(tmp_path):
    calls: list[httpx.Request] = []

    def s3(request):
        calls.append(request)
        body = [b"abc", b"def"]
        return httpx.Response(200, headers={"Content-Length": "6"}, stream=Dropping(body, drop=len(calls) == 1))

    api_calls = []
    client, sleeps = stub(lambda request: api_calls.append(request) or httpx.Response(404))
    client._core._download_http = httpx.Client(transport=httpx.MockTransport(s3))
    dest = tmp_path / "out" / "weights.bin"
    path = client._core.download("https://s3.test/bucket/key?X-Amz-Signature=s", dest, name="weights.bin")
    assert path.read_bytes() == b"abcdef" and len(calls) == 2 and api_calls == []
    assert "Authorization" not in calls[0].headers and sleeps == [0.5]
    assert [p.name for p in dest.parent.iterdir()] == ["weights.bin"]


def test_problem_messages_name_the_fields_once():
    request = httpx.Request("POST", "http://api.test/v1/datasets")
    upload = error_from(problem(422, "images/3.png: cannot be decoded", errors=[
        {"file": "images/3.png", "message": "cannot be decoded"}], request=request))
    assert str(upload) == "images/3.png: cannot be decoded" and upload.fields == ["images/3.png"]
    custom = error_from(problem(422, "the job is invalid", errors=[
        {"field": "seed", "message": "too large"}, {"field": "metadata"}], request=request))
    assert isinstance(custom, Invalid) and str(custom) == "the job is invalid (seed: too large; metadata)"
    plain = error_from(httpx.Response(502, text="<html>bad gateway</html>", request=request))
    assert plain.status == 502 and "bad gateway" in str(plain)


def test_the_package_imports_without_torch_or_the_server():
    code = ("import sys, difftune_client, difftune_client.cli; "
            "print(sorted(m for m in ('torch', 'fastapi', 'sqlalchemy', 'starlette', 'api', 'core', 'models') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_expired_checkpoint_links_are_asked_for_again(tmp_path):
    listings = []

    def api(request):
        listings.append(request)
        link = {"path": "model_index.json", "url": f"https://s3.test/ckpt?sig={len(listings)}"}
        checkpoint = {"id": "ckpt_1", "step": 4, "created_at": "2026-01-01T00:00:00Z", "files": [link]}
        return httpx.Response(200, json={"object": "list", "data": [checkpoint], "has_more": False})

    def s3(request):
        if request.url.params["sig"] == "1":
            return httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Request has expired</Message>")
        return httpx.Response(200, content=b"{}")

    client, _ = stub(api)
    client._core._download_http = httpx.Client(transport=httpx.MockTransport(s3))
    folder = client.jobs.checkpoints.download("job_1", dest_dir=tmp_path / "ckpt")
    assert (folder / "model_index.json").read_bytes() == b"{}" and len(listings) == 2
