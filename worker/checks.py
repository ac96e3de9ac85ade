"""Check that a registered base model loads, and record the answer on its row."""

from __future__ import annotations

from contract.families import family_of_api_name
from core.enums import BaseModelStatus
from core.services import base_models
from core.storage import StorageError
from core.tables import RegisteredModel
from worker.context import context
from worker.fetch import fetch_base_model


def check_base_model(base_model_id: str) -> str:
    """Fetch and load the base model once; mark it ``ready`` or ``failed`` with the reason."""
    from models.families import family_class

    ctx = context()
    with ctx.sessions() as session:
        model = session.get(RegisteredModel, base_model_id)
    if model is None:
        return "missing"
    try:
        location = fetch_base_model(ctx, model)
        name = family_of_api_name(model.family).name
        loaded = family_class(name).from_pretrained(location, device="cpu")  # no config: the native size
    except StorageError:
        raise
    except (ValueError, OSError) as err:
        with ctx.sessions() as session:
            base_models.mark_failed(session, base_model_id=base_model_id, error=str(err))
        return BaseModelStatus.FAILED
    with ctx.sessions() as session:
        base_models.mark_ready(session, base_model_id=base_model_id, resolutions=loaded.resolutions())
    return BaseModelStatus.READY
