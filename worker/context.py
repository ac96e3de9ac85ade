"""What a worker process shares between jobs: settings, database sessions, storage, the broker."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_sessionmaker
from core.queue import enqueue_webhook, make_celery
from core.services import webhooks
from core.settings import Settings, load_settings
from core.storage import Storage, make_storage


@dataclass(frozen=True)
class WorkerContext:
    """Connections a worker opens once."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    producer: Celery

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.cache_dir).resolve()


@cache
def context() -> WorkerContext:
    settings = load_settings()
    ctx = WorkerContext(settings=settings, sessions=make_sessionmaker(make_engine(settings.database_url)),
                        storage=make_storage(settings), producer=make_celery(settings))
    # webhook deliveries staged by this process's writes go out as soon as they are committed
    webhooks.set_dispatcher(lambda delivery_id: enqueue_webhook(ctx.producer, delivery_id))
    return ctx
