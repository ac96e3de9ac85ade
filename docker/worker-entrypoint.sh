#!/bin/sh
# One Celery worker per GPU host on the `gpu` queue: one job at a time, prefetch 1, late ack.
set -eu
exec celery --app worker.app:app worker \
  --queues gpu --concurrency 1 --prefetch-multiplier 1 \
  --hostname "gpu@%h" --loglevel "${LOG_LEVEL:-INFO}"
