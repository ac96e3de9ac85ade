"""Entry point of each torchrun rank for a multi-GPU job: ``python -m worker.train_entry JOB SPEC``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from worker.context import context
from worker.pipeline import TrainSpec, train


def main(job_id: str, spec_file: str) -> None:
    spec = TrainSpec.from_json(Path(spec_file).read_text())
    outcome = train(context(), job_id, spec)
    from models.distributed import DistInfo, init_distributed, shutdown

    dist: DistInfo = init_distributed(spec.device)
    if dist.is_main:
        (Path(spec.out_dir) / "outcome.json").write_text(json.dumps(outcome))
    shutdown(dist)


if __name__ == "__main__":
    main(*sys.argv[1:3])
