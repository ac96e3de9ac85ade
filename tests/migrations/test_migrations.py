"""One Alembic history upgrades empty PostgreSQL and SQLite databases to head and back."""

from __future__ import annotations

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
