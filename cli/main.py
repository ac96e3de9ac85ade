"""``difftune``: one command line composed from what is installed.

- the training library (``ml`` extra): ``train``, ``bank``, ``sample``, ``tiny``, ``analyze``;
- the lab: ``bench throughput | transfer | controlnet``, ``library-demo``;
- the service (``service`` extra): ``serve``, ``keys`` and ``demo``;
- the REST client (``client`` extra, or any install with httpx): ``datasets``, ``base-models``, ``jobs``,
  ``api-keys``, ``webhooks``.

Which extras are installed is read from the import system (``find_spec``), so a missing extra hides
its commands instead of failing at start, while a real import error in our code still surfaces.
"""

from __future__ import annotations

from importlib.util import find_spec

import typer

ML_MODULES = ("torch", "diffusers", "transformers")
SERVICE_MODULES = ("fastapi", "sqlalchemy", "celery")
CLIENT_MODULES = ("httpx",)


def installed(modules: tuple[str, ...]) -> bool:
    """Whether every one of ``modules`` can be imported."""
    return all(find_spec(name) is not None for name in modules)


def build_app() -> typer.Typer:
    """The ``difftune`` Typer app with the commands of every installed extra."""
    app = typer.Typer(help="Diff-Tuning: fine-tune diffusion models without forgetting what transfers.",
                      no_args_is_help=True, pretty_exceptions_enable=False)
    service = installed(SERVICE_MODULES)
    if installed(ML_MODULES):
        from bench.cli import register as register_lab
        from models.cli import register as register_library

        register_library(app)
        register_lab(app, service=service)
    if service:
        from worker.cli import register as register_service

        register_service(app)
    if installed(CLIENT_MODULES):
        from difftune_client.cli import register as register_client

        register_client(app)
    return app


app = build_app()

if __name__ == "__main__":
    app()
