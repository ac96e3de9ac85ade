"""Entry point for uvicorn: ``uvicorn --factory api.main:app`` (settings from ``DIFFTUNE_*``)."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from core.settings import load_settings


def app() -> FastAPI:
    """The API configured from the environment."""
    return create_app(load_settings())
