"""Embedded mode: API + worker as child processes on SQLite, a SQLite broker and a local store."""

from __future__ import annotations

import httpx
import pytest

from worker.embedded import EmbeddedStack


@pytest.mark.slow
def test_embedded_stack_starts_serves_and_stops(tmp_path):
    with EmbeddedStack(tmp_path / "home") as stack:
        ready = httpx.get(f"{stack.url}/readyz", timeout=5)
        assert ready.status_code == 200
        headers = {"Authorization": f"Bearer {stack.api_key}"}
        assert httpx.get(f"{stack.url}/v1/jobs", headers=headers, timeout=5).json()["data"] == []
        assert httpx.get(f"{stack.url}/v1/jobs", timeout=5).status_code == 401
        processes = list(stack.processes)
        assert all(p.poll() is None for p in processes)
    assert all(p.poll() is not None for p in processes)
    assert (tmp_path / "home" / "difftune.db").exists() and (tmp_path / "home" / "broker.db").exists()
    again = EmbeddedStack(tmp_path / "home")
    assert again.api_key == stack.api_key  # the key persists across restarts
