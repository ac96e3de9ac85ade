"""Settings read DIFFTUNE_* variables and reject bad values with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, load_settings, parse_storage_url


def test_reads_prefixed_environment(monkeypatch):
    monkeypatch.setenv("DIFFTUNE_STORAGE_URL", "s3://bucket/some/prefix")
    monkeypatch.setenv("DIFFTUNE_MAX_UPLOAD_FILES", "7")
    settings = load_settings()
    assert settings.storage.scheme == "s3"
    assert (settings.storage.bucket, settings.storage.prefix) == ("bucket", "some/prefix")
    assert settings.max_upload_files == 7


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DIFFTUNE_STORAGE_URL", "ftp://host/dir"),
        ("DIFFTUNE_STORAGE_URL", "s3://"),
        ("DIFFTUNE_DATABASE_URL", "mysql://db"),
        ("DIFFTUNE_BROKER_URL", "localhost"),
        ("DIFFTUNE_S3_ENDPOINT", "minio:9000"),
        ("DIFFTUNE_MAX_UPLOAD_BYTES", "-1"),
        ("DIFFTUNE_MAX_DECOMPRESSION_RATIO", "lots"),
        ("DIFFTUNE_MODEL_ROOTS", "relative/models"),
        ("DIFFTUNE_MODEL_S3_PREFIXES", "file:///models"),
        ("DIFFTUNE_RATE_LIMIT", "lots per second"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_file_storage_url_resolves_a_directory(tmp_path):
    location = parse_storage_url(f"file://{tmp_path}/store")
    assert location.scheme == "file" and location.path == Path(tmp_path) / "store"


def test_model_locations_read_as_lists(monkeypatch):
    monkeypatch.setenv("DIFFTUNE_MODEL_ROOTS", "/srv/models, /data/models")
    monkeypatch.setenv("DIFFTUNE_MODEL_S3_PREFIXES", '["s3://shared/models"]')
    settings = load_settings()
    assert settings.model_roots == [Path("/srv/models"), Path("/data/models")]
    assert settings.model_s3_prefixes == ["s3://shared/models"]
    assert load_settings(model_roots=[]).model_roots == []  # none by default: local locations are refused


def test_a_dead_workers_job_is_requeued_within_about_a_minute_by_default():
    """Worst case with the defaults: the last beat just before death, the timeout, then one reaper
    interval; the worker beats several times per timeout so one slow beat does not lose the job."""
    from worker.pipeline import heartbeat_interval
    from worker.reaper import reaper_interval

    timeout = load_settings().heartbeat_timeout
    assert timeout + reaper_interval(timeout) <= 60
    assert heartbeat_interval(timeout) <= timeout / 4
