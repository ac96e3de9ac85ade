"""Check that a registered base model loads, and record the answer on its row."""

from __future__ import annotations

from core.services import base_models
from core.storage import StorageError
from core.tables import BaseModel
from worker.context import context
from worker.fetch import fetch_base_model

# Service family names -> TrainConfig family names.
FAMILY_OF = {"sd-controlnet": "controlnet"}


def config_family(service_family: str) -> str:
    return FAMILY_OF.get(service_family, service_family)


def check_base_model(base_model_id: str) -> str:
    """Fetch and load the base model once; mark it ``ready`` or ``failed`` with the reason."""
    from contract.train_config import parse_config
    from models.families import load_family

    ctx = context()
    with ctx.sessions() as session:
        model = session.get(BaseModel, base_model_id)
    if model is None:
        return "missing"
    try:
        location = fetch_base_model(ctx, model)
        load_family(parse_config({"family": config_family(model.family), "base_model": location}))
    except StorageError:
        raise
    except (ValueError, OSError) as err:
        with ctx.sessions() as session:
            base_models.mark_failed(session, base_model_id=base_model_id, error=str(err))
        return "failed"
    with ctx.sessions() as session:
        base_models.mark_ready(session, base_model_id=base_model_id)
    return "ready"
