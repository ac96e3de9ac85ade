"""The import rules of docs/ARCHITECTURE.md, checked over every module of every package.

Each package may import only the packages of ours listed for it (lazy imports inside functions
count too), and the light packages never import the heavy third-party stacks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"contract", "models", "core", "api", "worker", "migrations", "bench", "cli", "difftune_client"}
ALLOWED = {
    "contract": {"contract"},
    "models": {"models", "contract"},
    "core": {"core", "contract"},
    "migrations": {"migrations", "core", "contract"},
    "api": {"api", "core", "contract"},
    "worker": {"worker", "core", "models", "contract"},
    "difftune_client": {"difftune_client"},
    "bench": OURS - {"cli"},
    "cli": OURS,
}
FORBIDDEN_THIRD_PARTY = {
    "contract": {"torch", "diffusers", "transformers", "sqlalchemy", "celery", "fastapi", "boto3"},
    "models": {"sqlalchemy", "celery", "fastapi", "boto3", "alembic", "redis", "uvicorn"},
    "core": {"torch", "diffusers", "transformers", "fastapi"},
    "api": {"torch", "diffusers", "transformers"},
    "difftune_client": {"torch", "diffusers", "transformers", "sqlalchemy", "celery", "fastapi", "starlette", "boto3"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, wherever it stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_package_has_a_rule():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "docs"}
    assert packages == set(ALLOWED), "add the new package's rule here and to docs/ARCHITECTURE.md"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_rules(package):
    breaks = []
    for path in sorted((ROOT / package).rglob("*.py")):
        names = imported_packages(path)
        bad = (names & OURS) - ALLOWED[package] | (names & FORBIDDEN_THIRD_PARTY.get(package, set()))
        breaks += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(bad)]
    assert breaks == []


CODE = """
import sys
import api.app, api.main, contract.train_config, core.keys_cli, core.services.jobs, core.storage, migrations
bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'models', 'worker', 'diffusers', 'bench'})
print(','.join(bad))
"""


def test_api_and_core_stay_light_at_run_time():
    """Nothing they import pulls torch in indirectly (the api image has none)."""
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
