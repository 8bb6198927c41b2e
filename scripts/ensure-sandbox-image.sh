#!/usr/bin/env bash
# `make run`: make sure the sandbox image the settings name exists, building it when Docker is
# present and the image is missing: `docker build sandbox-image/` when a registry answers, else
# the offline recipe (sandbox-image/build-test-image.sh). Never fails `make run`: without Docker
# the assistant still answers, only its tools are unavailable (`microclaw-host doctor` says why).
# Usage: scripts/ensure-sandbox-image.sh PYTHON
set -u
PY="${1:-python3}"
cd "$(dirname "$0")/.."
IMAGE="$("$PY" -c 'from microclaw.config import load_settings; print(load_settings().sandbox.image)' 2>/dev/null)"
IMAGE="${IMAGE:-microclaw-sandbox:latest}"
if ! command -v docker >/dev/null 2>&1; then
  echo "sandbox: docker is not installed; agent tools stay unavailable (see microclaw-host doctor)"
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  echo "sandbox: the Docker engine does not answer; agent tools stay unavailable (see microclaw-host doctor)"
  exit 0
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "sandbox: image $IMAGE present"
  exit 0
fi
code="$(curl -s -o /dev/null -m 5 -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null || true)"
if [ -n "$code" ] && [ "$code" != "000" ]; then
  echo "sandbox: building $IMAGE from sandbox-image/Dockerfile (first run only, a few minutes)..."
  if docker build -t "$IMAGE" sandbox-image/; then
    echo "sandbox: image $IMAGE built"
    exit 0
  fi
  echo "sandbox: docker build failed; trying the offline recipe"
else
  echo "sandbox: no registry answers; building $IMAGE with the offline recipe (sandbox-image/build-test-image.sh)..."
fi
if bash sandbox-image/build-test-image.sh "$IMAGE"; then
  echo "sandbox: image $IMAGE built (offline recipe)"
else
  echo "sandbox: could not build $IMAGE; agent tools stay unavailable. Fix: see microclaw-host doctor"
fi
exit 0
