#!/usr/bin/env bash
# The README's test command: install what the tests need, make sure Redis and PostgreSQL answer,
# then lint, type-check and run the whole suite. Exits non-zero on any failure.
# Extra arguments go to pytest (e.g. scripts/test.sh -k send -x).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
  | { grep -v -e '^WARNING: Location' || true; }

: "${OTP_TEST_REDIS_HOST:=127.0.0.1}" "${OTP_TEST_REDIS_PORT:=6379}"
: "${OTP_TEST_PG_HOST:=127.0.0.1}" "${OTP_TEST_PG_PORT:=5432}" "${OTP_TEST_PG_USER:=postgres}"
export OTP_TEST_REDIS_HOST OTP_TEST_REDIS_PORT OTP_TEST_PG_HOST OTP_TEST_PG_PORT OTP_TEST_PG_USER

redis_up() { .venv/bin/python - <<PYEOF
import socket, sys
try:
    s = socket.create_connection(("$OTP_TEST_REDIS_HOST", $OTP_TEST_REDIS_PORT), timeout=1)
    s.sendall(b"PING\r\n"); ok = s.recv(16).startswith(b"+PONG")
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PYEOF
}
pg_up() { .venv/bin/python - <<PYEOF
import socket, sys
try:
    socket.create_connection(("$OTP_TEST_PG_HOST", $OTP_TEST_PG_PORT), timeout=1).close()
except OSError:
    sys.exit(1)
PYEOF
}
wait_for() { for _ in $(seq 1 30); do "$1" && return 0; sleep 0.5; done; return 1; }

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "test: starting the local redis-server on port $OTP_TEST_REDIS_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$OTP_TEST_REDIS_PORT" --save "" --appendonly no >/dev/null
  fi
  wait_for redis_up || { echo "test: Redis is not reachable at $OTP_TEST_REDIS_HOST:$OTP_TEST_REDIS_PORT." \
    "Start one: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no" >&2; exit 1; }
fi
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "test: starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for pg_up || { echo "test: PostgreSQL is not reachable at $OTP_TEST_PG_HOST:$OTP_TEST_PG_PORT." \
    "Start it: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start" \
    "(or set OTP_TEST_PG_HOST/PORT/USER to a server where that user may create databases)" >&2; exit 1; }
fi

# Debian packages some tests need: promtool (prometheus) for the alert rules' unit tests,
# chromium to render /docs and the verify-link page headless, and mmdebstrap, buildah and podman
# to build and run the container image. Installed when missing and this runs as root (CI);
# otherwise those tests skip, saying how to install them.
need_package() {  # need_package <command> <debian package> <what for> [apt-get options]
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing $2 ($3)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y ${4:---no-install-recommends} "$2" >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y ${4:---no-install-recommends} "$2" >/dev/null 2>&1; } \
      || echo "test: could not install $2; $3 will skip (apt-get install $2)"
  else
    echo "test: $1 is missing and this is not root: $3 will skip (apt-get install $2)"
  fi
}
need_package promtool prometheus "the alert rule tests"
need_package chromium chromium "the browser tests"
# buildah and podman with what they recommend (their storage and network helpers).
need_package mmdebstrap mmdebstrap "the container image test"
need_package buildah buildah "the container image test" --install-recommends
need_package podman podman "the container image test" --install-recommends

echo "test: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: mypy --strict"
.venv/bin/mypy
echo "test: pytest"
exec .venv/bin/pytest "$@"
