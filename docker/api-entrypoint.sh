#!/bin/sh
# Migrate the database first (the only place migrations run), then serve the API.
set -eu
python -m migrations
# several uvicorn processes: Prometheus series go to files here and /metrics sums them (api/metrics.py)
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/difftune-metrics}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
exec uvicorn --factory api.main:app --host 0.0.0.0 --port "${PORT:-8000}" \
  --workers "${API_WORKERS:-2}" --proxy-headers
