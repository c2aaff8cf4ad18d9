# syntax=docker/dockerfile:1
# des-packer: the DES batch commands in one image: des-pack, des, des-migrate and des-stats,
# with S3 output and PostgreSQL sources. It runs one-shot jobs, so it has no service to check.
#
# Build from the repository root:
#   docker build -f docker/des-packer.Dockerfile -t des-packer:local .
# Pack the example manifest (paths in it are relative to the manifest's directory):
#   docker run --rm -v "$(pwd)"/example_data:/data des-packer:local \
#     des-pack --input-json /data/manifests/to-pack.json --output-dir /data/output

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/des
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY packages/ packages/
COPY services/ services/
# des-migrate depends on des-packer, so one sync installs all four commands; its extras bring
# S3 (des-packer[s3] -> des-storage-s3) and PostgreSQL (psycopg binary wheels, no compiler).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package des-migrate --extra s3 --extra postgres

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="des-packer" \
      org.opencontainers.image.description="DES packer and migrator: des-pack, des, des-migrate, des-stats" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 des \
    && useradd --system --uid 10001 --gid des --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin des
COPY --from=build /opt/des /opt/des
ENV PATH=/opt/des/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
HEALTHCHECK NONE
CMD ["des-pack", "--help"]
