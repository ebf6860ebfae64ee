#!/usr/bin/env bash
# The container, for real: build the image on a base made here from Debian's packages, start it
# with `docker compose` (compose.yaml, a checkpoint mounted read-only), wait for /readyz, run the
# live page's Chromium test against it, check what compose.yaml promises (non-root, read-only
# root filesystem, 2 CPUs, 2 GB, health), and `compose down` leaves nothing running.
#
#   bash deploy/test_container.sh        # from the repository, with its .venv installed (.ci/run)
#
# Needs root, Debian's docker.io, docker-compose (or the compose plugin) and debootstrap; starts
# dockerd when none runs (and stops it again). No registry is needed: the base is debootstrapped,
# and a torch wheel already on this machine (pip's find-links) goes into deploy/local/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
BASE_IMAGE=${BASE_IMAGE:-accel-signs-base:bookworm}
IMAGE=${IMAGE:-accel-signs-serve:test}
PROJECT=accel-signs-test
WORK=$(mktemp -d /tmp/accel-signs-container.XXXXXX)
log() { echo "[test_container $(date -u +%H:%M:%S)] $*"; }
free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
check() { if [ "$2" != "$3" ]; then echo "container: $1 is $2, expected $3" >&2; exit 1; fi; }

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
STARTED_DOCKERD= NGINX_STARTED=
compose() { "${COMPOSE[@]}" -p "$PROJECT" --env-file "$WORK/test.env" -f compose.yaml -f "$WORK/bundles.yaml" "$@"; }
cleanup() {
  set +e
  if [ -n "$NGINX_STARTED" ]; then nginx -c "$WORK/nginx.conf" -s stop; fi
  if [ -f "$WORK/test.env" ]; then
    compose down -v --remove-orphans >/dev/null 2>&1
  fi
  if [ -n "$STARTED_DOCKERD" ]; then kill "$STARTED_DOCKERD" && wait "$STARTED_DOCKERD" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  dockerd >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; exit 1; }
fi

# 1. A base image from Debian's own packages (no registry here): debootstrap, then docker import.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "debootstrap bookworm -> $BASE_IMAGE"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  tar -C "$WORK/rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

# 2. The image. This machine's torch is a CPU wheel on disk (pip's find-links); PyPI's torch would
# be the multi-GB CUDA build. Real users get the CPU build from TORCH_INDEX instead (docs/deploy.md).
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__)")
if ! ls deploy/local/torch-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --no-deps "torch==$TORCH_VERSION" -d deploy/local
fi
CA=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
if [ -n "$CA" ] && [ -f "$CA" ]; then cp "$CA" deploy/local/ca.crt; fi
log "building $IMAGE on $BASE_IMAGE (torch $TORCH_VERSION)"
start=$(date +%s)
docker build --network host -q -t "$IMAGE" --build-arg BASE="$BASE_IMAGE" --build-arg TORCH_INDEX= \
  --build-arg TORCH="torch==$TORCH_VERSION" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "built in $(($(date +%s) - start)) s: $((SIZE / 1000000)) MB"

# 3. A checkpoint like the browser test's own (6 KArSL signs), mounted read-only.
log "training a tiny checkpoint"
"$PY" - "$WORK" >"$WORK/train.log" 2>&1 <<'EOF' || { tail -20 "$WORK/train.log"; exit 1; }
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from helpers import train_tiny_run

from accel_signs.data.synth import SynthSpec, write_synthetic

root = Path(sys.argv[1])
store = write_synthetic(root / "store", SynthSpec(classes=6, signers=2, reps=4, seed=7, first_sign=160))
train_tiny_run(store, root / "runs", "--num-epochs", "2")
EOF
MODEL=$WORK/runs/r/best
# The tasks extractor's bundles: Google's cannot be fetched from here, so the test bundles
# (tests/make_landmarkers.py) are mounted read-only, as on a server without internet (docs/deploy.md).
"$PY" tests/make_landmarkers.py "$WORK/landmarkers" >"$WORK/landmarkers.log" 2>&1 \
  || { tail -20 "$WORK/landmarkers.log"; exit 1; }
cat >"$WORK/bundles.yaml" <<EOF
services:
  serve:
    volumes:
      - $WORK/landmarkers:/landmarkers:ro
EOF
chmod -R a+rX "$WORK"  # the container's user is not root
PORT=$(free_port)
cat >"$WORK/test.env" <<EOF
IMAGE=$IMAGE
MODEL_DIR=$MODEL
PORT=$PORT
ENV_FILE=$WORK/test.env
ACCEL_SIGNS_SERVE_MAX_CLIENTS=2
ACCEL_SIGNS_SERVE_EXTRACTOR=tasks
ACCEL_SIGNS_SERVE_LANDMARKERS=/landmarkers
EOF

# 4. Up, and the time until /readyz answers 200.
up() {  # compose up (again: recreated when .env changed), until /readyz answers 200
  start=$(date +%s.%N)
  compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; exit 1; }
  CID=$(compose ps -q serve)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ]; do
    if [ "$(docker inspect -f '{{.State.Running}}' "$CID")" != true ] || (($(date +%s) - ${start%.*} > 180)); then
      docker logs "$CID" 2>&1 | tail -30
      exit 1
    fi
    sleep 0.2
  done
  READY=$("$PY" -c "print(round($(date +%s.%N) - $start, 1))")
}
log "compose up on port $PORT"
up
FIRST_READY=$READY
log "ready $READY s after compose up: $(curl -s "http://127.0.0.1:$PORT/readyz")"
for _ in $(seq 60); do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$CID")" = healthy ] && break
  sleep 1
done

# 5. What compose.yaml promises.
check "health" "$(docker inspect -f '{{.State.Health.Status}}' "$CID")" healthy
check "user id" "$(docker exec "$CID" id -u)" 10001
check "read-only root" "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$CID")" true
check "CPU limit" "$(docker inspect -f '{{.HostConfig.NanoCpus}}' "$CID")" 2000000000
check "memory limit" "$(docker inspect -f '{{.HostConfig.Memory}}' "$CID")" $((2 * 1024 * 1024 * 1024))
check "restart policy" "$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$CID")" unless-stopped
check "/model mount" "$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/model"}}{{.RW}}{{end}}{{end}}' "$CID")" false
if docker exec "$CID" touch /opt/venv/x 2>/dev/null; then echo "container: the root filesystem is writable" >&2; exit 1; fi

# 6. The live page's Chromium test, against the container.
log "Chromium test of the live page against the container"
ACCEL_SIGNS_TEST_URL="http://127.0.0.1:$PORT/" ACCEL_SIGNS_TEST_CHECKPOINT=$MODEL \
  "$PY" -m pytest -n 0 -q -p no:cacheprovider tests/test_serve_browser.py

# 7. Behind nginx with TLS under /signs, configured by docs/deploy.md's own server block (taken
# from the page; a self-signed certificate and free ports instead of the domain's).
if command -v nginx >/dev/null; then
  log "behind nginx (docs/deploy.md's server block), over TLS, under /signs"
  echo "ACCEL_SIGNS_SERVE_ROOT_PATH=/signs" >>"$WORK/test.env"
  up
  log "ready again $READY s after compose up (the container recreated with the root path)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1
  TLS_PORT=$(free_port)
  "$PY" - "$WORK" "$TLS_PORT" "$PORT" <<'EOF'
import re
import sys
from pathlib import Path

work, tls_port, port = sys.argv[1:]
block = re.search(r"```nginx\n(.*?)```", Path("docs/deploy.md").read_text("utf-8"), re.S)[1]
block = (
    block.replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
    .replace("/etc/letsencrypt/live/example.org/fullchain.pem", f"{work}/cert.pem")
    .replace("/etc/letsencrypt/live/example.org/privkey.pem", f"{work}/key.pem")
    .replace("http://127.0.0.1:8000/", f"http://127.0.0.1:{port}/")
)
assert f"127.0.0.1:{port}" in block and f"{work}/key.pem" in block, block
Path(work, "nginx.conf").write_text(
    f"user root;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log;\nevents {{}}\n"
    f"http {{\n  access_log {work}/nginx-access.log;\n  client_body_temp_path {work}/nginx-body;\n"
    f"  proxy_temp_path {work}/nginx-proxy;\n{block}}}\n"
)
EOF
  nginx -c "$WORK/nginx.conf"
  NGINX_STARTED=1
  URL="https://127.0.0.1:$TLS_PORT/signs/"
  check "nginx /signs redirect" "$(curl -sk -o /dev/null -w '%{http_code} %{redirect_url}' "${URL%/}")" \
    "301 https://127.0.0.1:$TLS_PORT/signs/"
  check "readyz through nginx" "$(curl -sk -o /dev/null -w '%{http_code}' "${URL}readyz")" 200
  log "Chromium test of the live page at $URL"
  ACCEL_SIGNS_TEST_URL=$URL ACCEL_SIGNS_TEST_CHECKPOINT=$MODEL \
    "$PY" -m pytest -n 0 -q -p no:cacheprovider tests/test_serve_browser.py
  nginx -c "$WORK/nginx.conf" -s stop
  NGINX_STARTED=
else
  log "nginx is not installed: the proxy of docs/deploy.md is not tested (apt-get install nginx-light)"
fi

# 8. Down leaves nothing running.
compose down -v --remove-orphans >/dev/null 2>&1
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
if [ -n "$left" ]; then echo "containers left after compose down: $left" >&2; exit 1; fi
rm "$WORK/test.env"
log "ok: image $((SIZE / 1000000)) MB, ready in $FIRST_READY s, the page's Chromium tests passed, nothing left running"
