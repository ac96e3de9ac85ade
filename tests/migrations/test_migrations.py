"""One Alembic history upgrades empty PostgreSQL and SQLite databases to head and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from core.db import make_engine
from core.tables import Base
from migrations import downgrade, upgrade

TABLES = {t.name for t in Base.metadata.sorted_tables}


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request, make_pg_database, tmp_path) -> str:
    return make_pg_database() if request.param == "postgresql" else f"sqlite:///{tmp_path}/fresh.db"


def test_upgrade_matches_the_models_and_downgrade_empties(empty_url):
    upgrade(empty_url)
    engine = make_engine(empty_url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"migrations and core/tables.py disagree: {diff}"
        downgrade(empty_url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(empty_url)  # and back up again
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_startup_command_migrates_the_configured_database(tmp_path):
    url = f"sqlite:///{tmp_path}/startup.db"
    env = {**os.environ, "DIFFTUNE_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "migrations"], env=env, check=True, capture_output=True)
    engine = make_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_startup_command_rejects_bad_settings():
    env = {**os.environ, "DIFFTUNE_DATABASE_URL": "oracle://x"}
    result = subprocess.run([sys.executable, "-m", "migrations"], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "DIFFTUNE_DATABASE_URL" in result.stderr


def test_importing_migrations_touches_no_database(tmp_path):
    url = f"sqlite:///{tmp_path}/untouched.db"
    env = {**os.environ, "DIFFTUNE_DATABASE_URL": url}
    subprocess.run([sys.executable, "-c", "import migrations, core.tables, api.app"], env=env, check=True)
    assert not (tmp_path / "untouched.db").exists()


def test_0003_completes_the_stored_config_of_existing_tuning_jobs(empty_url):
    """Jobs stored before the job-config contract get their base model's family, id and prompts."""
    from sqlalchemy import text

    upgrade(empty_url, "0002")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenant (id, name, created_at) VALUES ('t', 't', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO base_model (id, tenant_id, name, family, location, status, created_at) "
                              "VALUES ('bm_cn', 't', 'cn', 'sd-controlnet', '{}', 'ready', CURRENT_TIMESTAMP)"))
            for job_id, kind, hyper in (("job_old", "tune", '{"family": "dit", "base_model": "", "max_steps": 5}'),
                                        ("job_probe", "forgetting_probe", '{"points": 3}')):
                conn.execute(text(
                    "INSERT INTO job (id, tenant_id, kind, base_model_id, method, status, hyperparameters, "
                    "validation_prompts, seed, metadata, resources, step, attempts, created_at) VALUES "
                    f"('{job_id}', 't', '{kind}', 'bm_cn', 'difftune', 'queued', '{hyper}', '[\"a house\"]', 0, "
                    "'{}', '{}', 0, 0, CURRENT_TIMESTAMP)"))
        upgrade(empty_url)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT id, hyperparameters FROM job")).all())
        decode = (lambda v: v) if isinstance(rows["job_old"], dict) else json.loads
        assert decode(rows["job_old"]) == {"family": "controlnet", "base_model": "bm_cn", "max_steps": 5,
                                           "validation_prompts": ["a house"]}
        assert decode(rows["job_probe"]) == {"points": 3}  # probes keep their own parameters
    finally:
        engine.dispose()


def test_0009_keeps_earlier_deliveries_as_the_jobs_own_and_adds_no_endpoint(empty_url):
    """Deliveries stored before tenant endpoints went to the job's webhook (target ``job``); no tenant has
    an endpoint; downgrading keeps the deliveries."""
    from sqlalchemy import text

    upgrade(empty_url, "0008")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenant (id, name, created_at) VALUES ('t', 't', CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO job (id, tenant_id, kind, method, status, hyperparameters, seed, metadata, resources, "
                "step, attempts, created_at) VALUES ('job_a', 't', 'tune', 'difftune', 'cancelled', '{}', 0, '{}', "
                "'{}', 0, 0, CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO webhook_delivery (id, job_id, tenant_id, event, url, payload, status, attempts, "
                "next_attempt_at, created_at) VALUES ('whd_a', 'job_a', 't', 'job.cancelled', 'https://h.example/x', "
                "'{}', 'pending', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        upgrade(empty_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, target, url FROM webhook_delivery")).all() == [
                ("whd_a", "job", "https://h.example/x")]
            assert conn.execute(text("SELECT count(*) FROM webhook_endpoint")).scalar() == 0
        downgrade(empty_url, "0008")
        assert "webhook_endpoint" not in inspect(engine).get_table_names()
        assert "target" not in {c["name"] for c in inspect(engine).get_columns("webhook_delivery")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM webhook_delivery")).all() == [("whd_a",)]
    finally:
        engine.dispose()
