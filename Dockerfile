# syntax=docker/dockerfile:1
# One Dockerfile for both worlds: operators build FROM the official slim Python image; the test
# suite (tests/test_container_image.py) builds FROM a Debian bookworm base made with mmdebstrap,
# offline, from wheels built on the host (--build-arg PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# pip reads these from the environment when they are given; unset, it uses PyPI as usual.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY src ./src
COPY migrations ./migrations
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install .

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system otp && useradd --system --gid otp --home-dir /app --create-home otp
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER otp
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
  CMD ["python3", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["otp-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
