# syntax=docker/dockerfile:1
# Healthbeat worker: `docker run --env-file .env -v healthbeat-data:/data healthbeat`

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rules ./rules
COPY worker ./worker
COPY connectors ./connectors
RUN python -m venv /opt/healthbeat \
    && /opt/healthbeat/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 healthbeat \
    && mkdir -p /data \
    && chown healthbeat /data
COPY --from=build /opt/healthbeat /opt/healthbeat
COPY rules /app/rules
ENV PATH=/opt/healthbeat/bin:$PATH \
    HEALTHBEAT_DB=/data/healthbeat.db \
    HEALTHBEAT_RULES_DIR=/app/rules \
    HEALTHBEAT_HTTP_PORT=8080 \
    PYTHONUNBUFFERED=1
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
USER 10001
# /healthz answers 503 when the last good cycle is older than three intervals
HEALTHCHECK --interval=60s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTHBEAT_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["healthbeat"]
CMD ["run"]
