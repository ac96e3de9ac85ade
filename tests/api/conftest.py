"""API fixtures: helpers that upload datasets and register base models through the REST API."""

from __future__ import annotations

import pytest


@pytest.fixture
def upload(client, auth, archives):
    """Upload an archive (bytes) as ``filename``; return the response."""

    def upload(data: bytes, filename: str = "data.zip", headers: dict | None = None, name: str | None = None):
        form = {"name": name} if name else None
        return client.post(
            "/v1/datasets", headers={**auth, **(headers or {})}, files={"file": (filename, data)}, data=form
        )

    return upload


@pytest.fixture
def dataset(upload, archives) -> dict:
    """A class-folder dataset of 2 classes × 3 images."""
    response = upload(archives.zip(archives.class_folders()))
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def register(client, auth):
    """Register a base model of ``family`` at ``location``; return its JSON."""

    def register(family: str, location: dict, name: str = "model") -> dict:
        response = client.post("/v1/base-models", headers=auth, json={"name": name, "family": family,
                                                                      "location": location})
        assert response.status_code == 201, response.text
        return response.json()

    return register


@pytest.fixture
def base_model(register) -> dict:
    """A registered DiT base model."""
    return register("dit", {"kind": "s3", "uri": "s3://models/tiny-dit"}, name="tiny-dit")
