#!/bin/sh
# One Celery worker per host, one task at a time (solo pool: the task runs in the main process, so a
# SIGTERM from Docker/Kubernetes reaches it and the running job checkpoints and goes back to the queue).
#   WORKER_QUEUES=gpu     GPU hosts: training jobs (the default)
#   WORKER_QUEUES=checks  CPU hosts: base-model load checks, so a flood of them never delays training
set -eu
QUEUES="${WORKER_QUEUES:-gpu}"
exec celery --app worker.app:app worker \
  --queues "$QUEUES" --pool solo --concurrency 1 --prefetch-multiplier 1 \
  --hostname "${QUEUES%%,*}@%h" --loglevel "${LOG_LEVEL:-INFO}"
