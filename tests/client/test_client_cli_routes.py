"""Every operation of the API's OpenAPI document is reachable from a ``difftune`` command: a route added
without a command (or a command renamed away from its route) fails here."""

from __future__ import annotations

from typing import Any

import typer

from difftune_client import cli

# (method, path) → the commands that send it (words, then the options that select it)
COMMANDS: dict[tuple[str, str], list[str]] = {
    ("POST", "/v1/datasets"): ["datasets upload"],
    ("GET", "/v1/datasets"): ["datasets list"],
    ("GET", "/v1/datasets/{dataset_id}"): ["datasets get"],
    ("DELETE", "/v1/datasets/{dataset_id}"): ["datasets delete"],
    ("GET", "/v1/datasets/{dataset_id}/buckets"): ["datasets buckets"],
    ("POST", "/v1/base-models"): ["base-models create"],
    ("POST", "/v1/base-models/upload"): ["base-models upload"],
    ("GET", "/v1/base-models"): ["base-models list"],
    ("GET", "/v1/base-models/{base_model_id}"): ["base-models get", "base-models create --wait"],
    ("POST", "/v1/jobs"): ["jobs create"],
    ("GET", "/v1/jobs"): ["jobs list", "jobs forgetting-probes list"],
    ("GET", "/v1/jobs/{job_id}"): ["jobs get", "jobs wait", "jobs forgetting-probes get"],
    ("POST", "/v1/jobs/{job_id}/cancel"): ["jobs cancel"],
    ("GET", "/v1/jobs/{job_id}/events"): ["jobs logs", "jobs logs --follow"],
    ("GET", "/v1/jobs/{job_id}/metrics"): ["jobs metrics"],
    ("GET", "/v1/jobs/{job_id}/webhook-deliveries"): ["jobs webhook-deliveries"],
    ("GET", "/v1/jobs/{job_id}/checkpoints"): ["jobs checkpoints", "jobs download"],
    ("GET", "/v1/jobs/{job_id}/samples"): ["jobs samples list", "jobs samples download"],
    ("GET", "/v1/jobs/{job_id}/reports"): ["jobs reports list", "jobs reports download"],
    ("POST", "/v1/jobs/{job_id}/forgetting-probes"): ["jobs forgetting-probes start"],
    ("GET", "/v1/api-keys"): ["api-keys list"],
    ("POST", "/v1/api-keys"): ["api-keys create"],
    ("DELETE", "/v1/api-keys/{key_id}"): ["api-keys revoke"],
    ("GET", "/v1/webhooks/secret"): ["webhooks secret"],
    ("POST", "/v1/webhooks/secret"): ["webhooks secret --rotate"],
    ("GET", "/v1/webhooks/endpoint"): ["webhooks endpoint get"],
    ("PUT", "/v1/webhooks/endpoint"): ["webhooks endpoint set", "webhooks endpoint set --event"],
    ("DELETE", "/v1/webhooks/endpoint"): ["webhooks endpoint delete"],
    # the signed download links the listings of checkpoints, sample grids and reports answer (local store)
    ("GET", "/v1/files/{key}"): ["jobs download", "jobs samples download", "jobs reports download"],
}
# operations with no command, and why
LEFT_OUT = {
    ("GET", "/healthz"): "liveness probe of the API process, for orchestrators (Client.health() in Python)",
    ("GET", "/readyz"): "readiness probe (database, broker, storage), for orchestrators (Client.ready())",
}
METHODS = {"get", "post", "put", "patch", "delete"}


def operations(app) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in app.openapi()["paths"].items()
            for method in item if method in METHODS}


def resolve(root: Any, command: str) -> Any:
    """The (click) command that ``difftune WORDS… [--OPTIONS]`` runs, checking that its options exist."""
    words = command.split()
    target = root
    for word in (w for w in words if not w.startswith("-")):
        assert word in getattr(target, "commands", {}), f"no command {command!r}"
        target = target.commands[word]
    assert not hasattr(target, "commands"), f"{command!r} is a group, not a command"
    options = {opt for param in target.params for opt in param.opts}
    missing = [w for w in words if w.startswith("-") and w not in options]
    assert not missing, f"{command!r}: no option {missing}"
    return target


def test_every_operation_of_the_api_has_a_command(app):
    found = operations(app)
    unmapped = sorted(found - set(COMMANDS) - set(LEFT_OUT))
    assert not unmapped, f"operations without a difftune command (add one, then map it in COMMANDS): {unmapped}"
    gone = sorted((set(COMMANDS) | set(LEFT_OUT)) - found)
    assert not gone, f"mapped operations the API no longer has: {gone}"
    assert all(path.startswith("/v1/") for _, path in COMMANDS)

    app_cli = typer.Typer()
    cli.register(app_cli)
    root = typer.main.get_command(app_cli)
    for commands in COMMANDS.values():
        for command in commands:
            resolve(root, command)
