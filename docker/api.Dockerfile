# The REST API: contract + core + api + migrations with the `service` extra only — no torch, no CUDA.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 difftune

COPY pyproject.toml README.md alembic.ini ./
COPY contract ./contract
COPY core ./core
COPY api ./api
COPY migrations ./migrations
RUN pip install ".[service]"

COPY docker/api-entrypoint.sh /usr/local/bin/api-entrypoint.sh
RUN mkdir -p /var/cache/difftune && chown difftune /var/cache/difftune
USER difftune
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
ENTRYPOINT ["/usr/local/bin/api-entrypoint.sh"]
