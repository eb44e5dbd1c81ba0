# syntax=docker/dockerfile:1
#
# Reserve exchange: one process (`reserves serve`) with the HTTP API, the Kafka consumers, the
# relay and the projections. Configure it with the contract's environment variables; without
# DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS it would fall back to the embedded development
# PostgreSQL and broker, so set both in any real deployment (docker-compose.yml does).

# --- build: install the project and its dependencies into a virtualenv -----------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain/ domain/
COPY handlers/ handlers/
COPY projections/ projections/
COPY services/ services/
COPY console/ console/
RUN pip install --upgrade pip \
 && pip install .

# --- runtime ---------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8000

RUN groupadd --system --gid 10001 reserves \
 && useradd --system --uid 10001 --gid reserves --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin reserves \
 && mkdir -p /app/var \
 && chown -R reserves:reserves /app

COPY --from=build /opt/venv /opt/venv

# ./var (relative to the working directory) is where the service keeps local state.
WORKDIR /app
USER 10001:10001

EXPOSE 8000

# No curl in the slim image: probe /health with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HTTP_PORT', '8000') + '/health', timeout=4)"]

CMD ["reserves", "serve"]
