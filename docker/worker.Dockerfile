# A GPU worker: CUDA runtime, a CUDA build of torch, and the `ml` + `service` extras.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY contract ./contract
COPY core ./core
COPY models ./models
COPY worker ./worker
COPY bench ./bench
COPY cli ./cli
COPY difftune_client ./difftune_client
COPY migrations ./migrations
RUN pip install ".[ml,service,trackers]"

COPY docker/worker-entrypoint.sh /usr/local/bin/worker-entrypoint.sh
RUN useradd --create-home --uid 10001 difftune && mkdir -p /var/cache/difftune && chown difftune /var/cache/difftune
USER difftune
ENTRYPOINT ["/usr/local/bin/worker-entrypoint.sh"]
