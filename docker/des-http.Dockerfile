# syntax=docker/dockerfile:1
# des-http: the DES retrieval service (GET /files/{uid}, /health, /ready, /metrics).
#
# Build from the repository root (the workspace, uv.lock and every member are the context):
#   docker build -f docker/des-http.Dockerfile -t des-http:local .
# Run against a local directory of shards (read-only):
#   docker run --rm -p 8000:8000 -e DES_BACKEND=local -e DES_BASE_DIR=/data/des \
#     -v "$(pwd)"/example_data/des:/data/des:ro des-http:local

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# uv itself only ever lives in the build stage.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/des
WORKDIR /src
# The whole workspace is needed to resolve members; .dockerignore keeps caches and tests out.
COPY pyproject.toml uv.lock ./
COPY packages/ packages/
COPY services/ services/
# Exactly what uv.lock pins, nothing for development, installed (not linked) into /opt/des.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package des-http

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="des-http" \
      org.opencontainers.image.description="DES retrieval service" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 des \
    && useradd --system --uid 10001 --gid des --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin des
COPY --from=build /opt/des /opt/des
ENV PATH=/opt/des/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DES_BACKEND=local \
    DES_BASE_DIR=/data/des
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# Liveness only: /health answers while the process serves (readiness is /ready, for Kubernetes).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# des-http runs granian (one worker per core; header, timeout and concurrency limits from
# DES_HTTP_* variables, see the des-http README); --no-server-header sends "server: des-http".
CMD ["des-http", "--host", "0.0.0.0", "--port", "8000", "--no-server-header"]
