"""Names of a run's outputs, shared by the library (local folders) and the service (object keys).

A checkpoint at step 1200 is the folder ``step_0001200``; its sample grid is ``step_0001200.png``.
Zero-padded names sort in step order as plain strings.
"""

from __future__ import annotations

import re

_STEP = re.compile(r"^step_(\d{7,})(?:\.png)?$")


def step_name(step: int) -> str:
    """``step_0001200`` for step 1200 (a checkpoint folder; add ``.png`` for its sample grid)."""
    return f"step_{step:07d}"


def step_of(name: str) -> int | None:
    """The step a ``step_…`` folder or ``step_….png`` file stands for; None for any other name."""
    match = _STEP.match(name)
    return int(match.group(1)) if match else None
