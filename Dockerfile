# syntax=docker/dockerfile:1
# Multi-stage: dependencies are built in a throwaway stage; the runtime image holds the venv and the code
# (run from /srv, so `python -m app.cli` is the command line and migrations/ sits beside app/).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install -r requirements.lock

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    WEB_CONCURRENCY=2 \
    PORT=8000 \
    KEEP_ALIVE_TIMEOUT_SECONDS=75 \
    DATABASE_URL=sqlite+aiosqlite:////data/cnfs.db
RUN groupadd --system cnfs && useradd --system --gid cnfs --home-dir /srv --no-create-home cnfs \
    && mkdir -p /data && chown cnfs:cnfs /data
WORKDIR /srv
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
USER cnfs
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"]
# `serve` checks the settings, the database and the port (one line and exit 2 when something is wrong), applies
# the migrations, then runs uvicorn with WEB_CONCURRENCY workers, KEEP_ALIVE_TIMEOUT_SECONDS of keep-alive and
# our own access log (no query strings). SECRET_KEY is required (32 characters or more). On SIGTERM it finishes
# the requests in flight for SHUTDOWN_TIMEOUT_SECONDS (20) before it exits: `docker stop` waits only 10 s
# before SIGKILL unless run with `--stop-timeout 30` (docs/operations.md).
CMD ["sh", "-c", "exec python -m app.cli serve --host 0.0.0.0 --port \"$PORT\" --no-demo"]
