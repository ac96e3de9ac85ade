"""Entry point of each torchrun rank for a multi-GPU job: ``python -m worker.train_entry JOB SPEC``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from worker.context import context
from worker.pipeline import TrainSpec, train


def main(job_id: str, spec_file: str) -> None:
    spec = TrainSpec.from_json(Path(spec_file).read_text())
    ctx = context()
    outcome = train(ctx, job_id, spec)
    from models.distributed import DistInfo, barrier, init_distributed, shutdown

    dist: DistInfo = init_distributed(spec.device)
    if dist.is_main:
        (Path(spec.out_dir) / "outcome.json").write_text(json.dumps(outcome))
        if spec.nodes > 1:  # rank 0 may run on any host: the leader reads the outcome from node 0's slot
            from core.services import gangs

            with ctx.sessions() as session:
                gangs.record_outcome(session, job_id=job_id, attempt=spec.attempt, outcome=outcome)
    barrier(dist)  # no host's torchrun ends before the outcome is recorded
    shutdown(dist)


if __name__ == "__main__":
    main(*sys.argv[1:3])
