"""Static checks of docker-compose.yml and the Dockerfiles (no Docker engine runs here)."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.queue import CHECKS_QUEUE, GPU_QUEUE, WEBHOOKS_QUEUE
from core.settings import ENV_PREFIX, Settings, load_settings
from tests.core.test_import_rules import OURS, imported_packages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
# What each image runs: its entry point's packages (the rest must follow from their imports).
ENTRY_PACKAGES = {"api": {"api", "migrations"}, "worker": {"worker", "migrations", "cli"}}
HEAVY = {"torch", "torchvision", "diffusers", "transformers", "accelerate", "peft", "triton"}


def interpolate(value: str) -> str:
    """Resolve ``${VAR:-default}`` the way compose does with an empty environment."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", str(value))


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    return {k: interpolate(v) for k, v in env.items()}


def dockerfile(service: str) -> Path:
    build = SERVICES[service]["build"]
    return ROOT / build["context"] / build["dockerfile"]


def test_stack_has_every_service_with_health_checks():
    assert set(SERVICES) == {"postgres", "redis", "minio", "createbucket", "api", "worker", "checker", "webhooks"}
    for name in ("postgres", "redis", "minio", "api"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["api"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "createbucket": {"condition": "service_completed_successfully"},
    }
    named = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", [])}
    assert named == set(COMPOSE["volumes"])


def test_worker_reserves_nvidia_gpus_and_the_checker_serves_checks_on_cpu():
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in SERVICES["checker"] and SERVICES["checker"]["build"] == SERVICES["worker"]["build"]
    assert environment("checker")["WORKER_QUEUES"] == CHECKS_QUEUE
    script = (ROOT / "docker/worker-entrypoint.sh").read_text()
    assert f'QUEUES="${{WORKER_QUEUES:-{GPU_QUEUE}}}"' in script and 'POOL="${WORKER_POOL:-solo}"' in script
    # webhooks: the light app on its own queue, many at once, on the worker image without a GPU
    hooks = environment("webhooks")
    assert hooks["WORKER_QUEUES"] == WEBHOOKS_QUEUE and hooks["WORKER_APP"] == "worker.webhook_app:app"
    assert hooks["WORKER_POOL"] == "threads" and "deploy" not in SERVICES["webhooks"]


@pytest.mark.parametrize("service", ["api", "worker"])
def test_dockerfiles_and_what_they_copy_exist(service):
    path = dockerfile(service)
    assert path.is_file()
    text = path.read_text()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
        for source in shlex.split(line)[:-1]:
            assert (ROOT / source).exists(), f"{path.name} copies missing {source}"
    entrypoint = re.search(r"^COPY (docker/\S+-entrypoint\.sh)", text, flags=re.M).group(1)
    assert os.access(ROOT / entrypoint, os.X_OK)


def copied(service: str) -> set[str]:
    """Top-level paths a Dockerfile copies into its image."""
    lines = re.findall(r"^COPY (.+)$", dockerfile(service).read_text(), flags=re.M)
    return {source.rstrip("/") for line in lines for source in shlex.split(line)[:-1]}


def our_imports(package: str) -> set[str]:
    """Packages of ours that any module of ``package`` imports (lazy imports too)."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        names |= imported_packages(path) & OURS
    return names


@pytest.mark.parametrize("service", ["api", "worker"])
def test_images_copy_every_package_their_code_imports(service):
    needed, todo = set(), list(ENTRY_PACKAGES[service])
    while todo:
        package = todo.pop()
        if package not in needed:
            needed.add(package)
            todo += our_imports(package)
    assert needed <= copied(service), f"{service} image lacks {sorted(needed - copied(service))}"
    assert {"pyproject.toml", "README.md"} <= copied(service)  # the install reads both


def test_api_runs_migrations_before_serving():
    script = (ROOT / "docker/api-entrypoint.sh").read_text()
    assert script.index("python -m migrations") < script.index("uvicorn --factory api.main:app")


@pytest.mark.parametrize("service", ["api", "worker", "checker"])
def test_env_vars_are_settings_and_validate(monkeypatch, service):
    env = environment(service)
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith(ENV_PREFIX)} - fields
    assert not unknown, f"{service} sets variables Settings does not read: {unknown}"
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.storage.scheme == "s3"


def test_services_agree_on_addresses_and_credentials():
    api, postgres, minio = environment("api"), environment("postgres"), environment("minio")
    database = urlsplit(api["DIFFTUNE_DATABASE_URL"])
    assert (database.hostname, database.username, database.password, database.path) == (
        "postgres",
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )
    assert urlsplit(api["DIFFTUNE_BROKER_URL"]).hostname == "redis"
    assert urlsplit(api["DIFFTUNE_S3_ENDPOINT"]).hostname == "minio"
    assert (api["DIFFTUNE_S3_ACCESS_KEY"], api["DIFFTUNE_S3_SECRET_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    bucket = urlsplit(api["DIFFTUNE_STORAGE_URL"]).hostname
    assert f"local/{bucket}" in " ".join(SERVICES["createbucket"]["entrypoint"])
    worker = environment("worker")
    assert {k: worker[k] for k in api if k in worker} == {k: api[k] for k in worker}


def _closure(requirements: list[Requirement], extra: str) -> set[str]:
    """Every installed distribution the requirements pull in, transitively."""
    seen: set[str] = set()
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": extra})]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            children = [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            continue
        wanted = set(req.extras)
        todo += [
            c
            for c in children
            if c.marker is None or any(c.marker.evaluate({"extra": e}) for e in wanted | {""})
        ]
    return seen


def test_api_image_installs_no_torch():
    text = dockerfile("api").read_text()
    installs = re.findall(r"pip install (.+)", text)
    assert installs == ['".[service]"']
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["service"]]
    closure = _closure(wanted, "service")
    assert "fastapi" in closure and "sqlalchemy" in closure
    assert not closure & HEAVY, f"the api image would install {closure & HEAVY}"
    assert not any(name.startswith("nvidia-") for name in closure)


def test_worker_image_installs_cuda_torch_and_both_extras():
    text = dockerfile("worker").read_text()
    assert text.startswith("#") and "FROM nvidia/cuda:" in text
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}" --index-url "\$\{TORCH_INDEX_URL\}"', text)
    assert 'pip install ".[ml,service,trackers]"' in text
