#!/bin/sh
# One Celery worker per host, one task at a time (solo pool: the task runs in the main process, so a
# SIGTERM from Docker/Kubernetes reaches it and the running job checkpoints and goes back to the queue).
#   WORKER_QUEUES=gpu     GPU hosts: training jobs (the default)
#   WORKER_QUEUES=checks  CPU hosts: base-model load checks, so a flood of them never delays training
#   WORKER_QUEUES=webhooks WORKER_APP=worker.webhook_app:app WORKER_POOL=threads WORKER_CONCURRENCY=8
#                         webhook deliveries (no torch imported), never queued behind a training job
set -eu
QUEUES="${WORKER_QUEUES:-gpu}"
APP="${WORKER_APP:-worker.app:app}"
POOL="${WORKER_POOL:-solo}"
exec celery --app "$APP" worker \
  --queues "$QUEUES" --pool "$POOL" --concurrency "${WORKER_CONCURRENCY:-1}" --prefetch-multiplier 1 \
  --hostname "${QUEUES%%,*}@%h" --loglevel "${LOG_LEVEL:-INFO}"
