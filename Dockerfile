# syntax=docker/dockerfile:1
# The model service: `mlcycle serve` on a verified bundle, as a non-root user.
#
#   dvc repro              # or `dvc pull`: models/bundle is a DVC output, not in git
#   docker build -t mlcycle-serve .
#   docker build --build-arg BUNDLE=prod-bundle -t mlcycle-serve .  # e.g. after
#                          # `dvc artifacts get . income-classifier --stage prod -o prod-bundle`
#   docker run --rm -p 8000:8000 mlcycle-serve
#   docker run --rm -p 8000:8000 mlcycle-serve --workers 4 --log-url postgresql+psycopg://...
#
# Options after the image name are appended to `mlcycle serve ...` (see ENTRYPOINT). Without
# --workers the service starts one worker per core it may use (its CPU affinity, capped by the
# container's cgroup CPU quota, e.g. `docker run --cpus 2`). The prediction log defaults to
# SQLite under /app/logs (writable by the service's user; mount a volume there to keep it), or
# use --log-url for PostgreSQL, or --no-log.

# Python: the version the lock file was compiled for (`--python-version 3.11`). Pinned to a
# patch release; pin the digest too (python:3.11.14-slim-bookworm@sha256:...) for builds that
# must be bit-for-bit repeatable.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: a virtualenv with exactly the locked dependencies and the package ---------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv /opt/venv

# The lock pins every distribution with its hashes: pip installs exactly those files (no fresh
# resolve; a missing or altered one fails the build). The lock also holds the dev extra (pytest,
# ruff, ...): those are removed below. Its one sdist (antlr4-python3-runtime, pure Python, no
# compiler needed) is built in pip's isolated build env, which PIP_CONSTRAINT pins to the
# locked setuptools where the base image's pip honours it there.
COPY requirements.lock ./
RUN sed -n 's/^\(setuptools==[^ ]*\).*/\1/p' requirements.lock > /tmp/build-constraints.txt \
    && PIP_CONSTRAINT=/tmp/build-constraints.txt \
       pip install --require-hashes -r requirements.lock

# The package itself, as a regular (non-editable) install, built with the locked setuptools
# already in the venv: nothing else is fetched.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation . \
    && pip check

# Keep only what `mlcycle` needs at run time: the closure of its requirements (markers and
# extras evaluated, the dev extra left out), each at the version the lock pinned.
RUN python - <<'PY'
import importlib.metadata as md
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

installed = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
keep, seen, todo = {"pip"}, set(), [("mlcycle", frozenset())]
while todo:
    name, extras = todo.pop()
    if (name, extras) in seen:
        continue
    seen.add((name, extras))
    keep.add(name)
    for spec in installed[name].requires or []:
        req = Requirement(spec)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
drop = sorted(set(installed) - keep)
print(f"runtime: {len(keep)} distributions; dropping {len(drop)}: {' '.join(drop)}")
if drop:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", *drop], check=True)
subprocess.run([sys.executable, "-m", "pip", "check"], check=True)
PY

# --- runtime: the interpreter, the virtualenv and the bundle; no compilers, no sources --------
FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE

# The bundle to serve, relative to the build context (a directory with SHA256SUMS).
ARG BUNDLE=models/bundle
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="mlcycle model service" \
      org.opencontainers.image.description="A verified mlcycle model bundle behind a REST API (mlcycle serve)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PATH=/opt/venv/bin:$PATH

# A fixed, numeric, unprivileged identity (runAsNonRoot can check a number, not a name).
RUN groupadd --system --gid 10001 mlcycle \
    && useradd --system --no-log-init --uid 10001 --gid mlcycle \
       --create-home --home-dir /home/mlcycle --shell /usr/sbin/nologin mlcycle

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Owned by root and read-only to the service: it verifies the bundle's SHA256SUMS at start, and
# it cannot alter what it serves. --chmod because a bundle is written as a private (0700)
# directory, which the service's user could not read. Only logs/ (the default SQLite
# prediction log) is writable.
COPY --chmod=0755 ${BUNDLE} /app/bundle
RUN mkdir -p /app/logs && chown mlcycle:mlcycle /app/logs

USER 10001:10001
EXPOSE 8000

# /health answers once the bundle is verified and loaded. Switch to the Open Inference
# Protocol's readiness endpoint, /v2/health/ready (503 while the prediction log cannot take
# records), when that endpoint has landed. No curl in a slim image: Python asks instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

# Exec form: mlcycle (uvicorn) is PID 1 and gets SIGTERM, stops taking connections, finishes
# the requests in flight and flushes the prediction log. Arguments given to `docker run` are
# appended (CMD is empty), e.g. `--workers 4` or `--no-log`. Beyond loopback with the log on,
# it needs a credential for labels: `docker run -e MLCYCLE_TOKENS ...` (docs/serving.md).
ENTRYPOINT ["mlcycle", "serve", "--bundle", "/app/bundle", "--host", "0.0.0.0", "--port", "8000"]
CMD []
