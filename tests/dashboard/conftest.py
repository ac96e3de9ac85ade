"""Dashboard fixtures: a signed-in browser session on the real app (TestClient keeps the cookie), and the
CSRF token a page embeds."""

from __future__ import annotations

import re

import pytest

TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = TOKEN.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client, key: str, next_url: str = "/ui/jobs"):
    """Sign in through the form; the answer (a 303 on success)."""
    page = client.get(f"/ui/sign-in?next={next_url}")
    return client.post("/ui/sign-in", data={"api_key": key, "next": next_url, "csrf_token": csrf_of(page.text)},
                       follow_redirects=False)


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def ui(client, auth):
    """The TestClient, signed in to the dashboard as tenant acme."""
    assert sign_in(client, key_of(auth)).status_code == 303
    return client


@pytest.fixture
def api_dataset(client, auth, archives) -> str:
    """A dataset of acme's (2 classes × 3 images of 16 px), uploaded through the REST API."""
    response = client.post("/v1/datasets", headers=auth, files={"file": ("d.zip", archives.zip(archives.class_folders()))})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def api_model(client, auth) -> str:
    """A DiT base model of acme's."""
    response = client.post("/v1/base-models", headers=auth, json={
        "name": "tiny-dit", "family": "dit", "location": {"kind": "s3", "uri": "s3://models/tiny-dit"}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def api_job(client, auth, api_model, api_dataset) -> str:
    """A queued job of acme's."""
    response = client.post("/v1/jobs", headers=auth, json={"base_model": api_model, "dataset": api_dataset,
                                                          "hyperparameters": {"max_steps": 20, "resolution": 16}})
    assert response.status_code == 201, response.text
    return response.json()["id"]
