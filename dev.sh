#!/usr/bin/env bash
# The two commands a newcomer needs:
#   ./dev.sh demo   set up, migrate, seed the demo trial and serve it on http://127.0.0.1:8000
#   ./dev.sh test   set up and run the whole test suite
# Both create .venv on first use. Without DATABASE_URL they use an embedded PostgreSQL (pgserver)
# in .pgdata/. The demo runs Celery eagerly unless CELERY_BROKER_URL is set; the tests run a real
# worker on Redis (CELERY_BROKER_URL, default redis://127.0.0.1:6379/15).
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
setup() {
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e ".[dev]"
    touch .venv/.installed
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  demo)
    setup
    .venv/bin/python manage.py migrate --noinput
    .venv/bin/python manage.py seed_demo
    .venv/bin/python manage.py seed_safety_demo
    .venv/bin/python manage.py seed_durability
    exec .venv/bin/python manage.py runserver 127.0.0.1:8000 "$@"
    ;;
  test)
    setup
    # The Celery tests run a real worker: they need a Redis (a local one by default).
    export CELERY_BROKER_URL=${CELERY_BROKER_URL:-redis://127.0.0.1:6379/15}
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest args]" >&2
    exit 2
    ;;
esac
