# syntax=docker/dockerfile:1
# feedworker: the scheduler and the HTTP server (`feedworker serve`) in one small image.
# Build:  docker build -t feedworker .      Run: see docker-compose.yml and the README's "Deploy" section.

# --- build stage: a virtual environment with the locked dependencies, then feedworker ----
# requirements.lock pins every dependency with its hashes (README, "Development"): pip
# refuses anything else. The package itself adds no dependency (--no-deps).
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

# --- final stage: that virtual environment, no build tools --------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    FEEDWORKER_CONFIG=/app/config/feedworker.yaml \
    FEEDWORKER_SERVER__HOST=0.0.0.0 \
    FEEDWORKER_SERVER__PORT=8080
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 feedworker \
    && useradd --system --uid 10001 --gid feedworker --home-dir /app --shell /usr/sbin/nologin feedworker \
    && mkdir -p /data/inbox /data/db /data/feeds \
    && chown -R feedworker:feedworker /data
WORKDIR /app
COPY config/docker.yaml /app/config/feedworker.yaml
USER 10001:10001
EXPOSE 8080
# 503 until the first run has succeeded, and when the last run failed or is too old.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FEEDWORKER_SERVER__PORT', '8080'), timeout=4)"]
CMD ["feedworker", "serve"]
