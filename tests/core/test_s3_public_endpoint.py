"""DIFFTUNE_S3_PUBLIC_ENDPOINT: presigned links name the address clients reach, I/O uses s3_endpoint."""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
import yaml
from pydantic import ValidationError

from core.settings import Settings, load_settings
from core.storage import S3Storage, make_storage

ALIASES = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}


def other_name(endpoint: str) -> str:
    """The same S3 server under another host name (the way compose's host sees MinIO)."""
    parts = urlsplit(endpoint)
    assert parts.hostname in ALIASES, f"the test S3 server must listen on loopback (got {parts.hostname})"
    return f"{parts.scheme}://{ALIASES[parts.hostname]}:{parts.port}"


def signed_for(url: str, host: str, secret: str) -> bool:
    """Whether ``url`` carries a valid SigV4 query signature for requests to ``host`` (an independent
    check: moto accepts any signature, and the host is what a wrong endpoint breaks)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = query.pop("X-Amz-Signature")
    assert query["X-Amz-SignedHeaders"] == "host"
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
    canonical = "\n".join(["GET", parts.path, canonical_query, f"host:{host}", "", "host", "UNSIGNED-PAYLOAD"])
    scope = query["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", query["X-Amz-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature)


def test_links_name_the_public_endpoint_and_download(settings, s3_endpoint):
    public = other_name(s3_endpoint)
    storage = make_storage(settings.model_copy(update={"s3_public_endpoint": public}))
    assert isinstance(storage, S3Storage)
    storage.put_stream("jobs/j1/samples/step_0000002.png", io.BytesIO(b"grid bytes"))  # through s3_endpoint
    url = storage.url_for("jobs/j1/samples/step_0000002.png", expires_in=60)
    assert url.startswith(public + "/") and "X-Amz-Signature=" in url
    secret = settings.s3_secret_key.get_secret_value()
    assert signed_for(url, urlsplit(public).netloc, secret)  # signed for the host clients use
    assert not signed_for(url, urlsplit(s3_endpoint).netloc, secret)  # not the containers' name
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == b"grid bytes"
    assert storage.list("jobs/j1/") == ["jobs/j1/samples/step_0000002.png"]


def test_without_a_public_endpoint_links_name_s3_endpoint(settings, s3_endpoint):
    storage = make_storage(settings)
    storage.put_stream("a.txt", io.BytesIO(b"a"))
    assert settings.s3_public_endpoint is None
    url = storage.url_for("a.txt")
    assert url.startswith(s3_endpoint + "/")
    assert signed_for(url, urlsplit(s3_endpoint).netloc, settings.s3_secret_key.get_secret_value())
    assert storage.presigner is storage.client


def test_setting_is_read_from_the_environment_and_validated(monkeypatch):
    monkeypatch.setenv("DIFFTUNE_S3_PUBLIC_ENDPOINT", "http://localhost:9000/")
    assert load_settings().s3_public_endpoint == "http://localhost:9000"
    with pytest.raises(ValidationError, match="s3_public_endpoint"):
        Settings(s3_public_endpoint="localhost:9000")


def test_compose_signs_links_for_the_published_minio_port():
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    services = compose["services"]
    value = services["api"]["environment"]["DIFFTUNE_S3_PUBLIC_ENDPOINT"]
    public = urlsplit(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value))  # compose's default
    internal = urlsplit(services["api"]["environment"]["DIFFTUNE_S3_ENDPOINT"])  # http://minio:9000
    published = {tuple(p.split(":")[-2:]) for p in services["minio"]["ports"]}
    assert public.hostname == "localhost" and (str(public.port), str(internal.port)) in published
    assert "DIFFTUNE_S3_PUBLIC_ENDPOINT" not in services["worker"]["environment"]  # only the API presigns
