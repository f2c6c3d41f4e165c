"""`make shared` (python -m resources.shared_deployment): one command starts the whole shared deployment on
127.0.0.1 (a PostgreSQL server with its three databases, a Ray head and workers, llama.cpp servers), writes the
profile and the variables a run needs, and a SIGTERM stops every piece it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from dsc_assets.lib.paths import PROJECT_ROOT
from dsc_assets_tests.postgres import postgres_or_skip


def _listening(url: str) -> bool:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


def _variables(env_file: Path, process: subprocess.Popen, timeout_s: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while not env_file.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the deployment did not write its variables in time"
        time.sleep(1)
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)


def test_one_command_starts_postgres_ray_and_a_server_and_sigterm_stops_every_piece(tmp_path):
    postgres_or_skip()
    import psycopg2

    env_file, profile = tmp_path / "shared.env", tmp_path / "shared.yaml"
    command = [sys.executable, "-m", "resources.shared_deployment", "--servers", "1", "--workers", "1"]
    command += ["--profile", str(profile), "--env-file", str(env_file), "--model-cache-dir", str(tmp_path / "m")]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        variables = _variables(env_file, process)
        urls = [variables[name] for name in ("DSC_CACHE_URL", "DSC_INSTANCE_URL", "DSC_WAREHOUSE_URL")]
        for url in urls:  # three empty databases on one server
            with psycopg2.connect(url) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT current_database()")
                assert cursor.fetchone()[0] == urlsplit(url).path.lstrip("/")
            connection.close()
        assert variables["DSC_EXECUTOR"] == "ray" and _listening(variables["DSC_RAY_ADDRESS"])
        written = yaml.safe_load(profile.read_text())
        assert written["extends"] == "test" and written["generator"]["backend"] == "openai"
        (endpoint,) = [e["url"] for e in written["generator"]["endpoints"]]
        with urllib.request.urlopen(f"{endpoint}/models", timeout=10) as answer:
            assert json.load(answer)["data"], "the llama.cpp server lists no model"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=120)
    assert process.returncode == 0
    stopped = [u for u in [*urls, variables["DSC_RAY_ADDRESS"], endpoint] if _listening(u)]
    assert not stopped, f"still listening after SIGTERM: {stopped}"
    try:
        os.killpg(process.pid, 0)
        left = True
    except ProcessLookupError:
        left = False
    assert not left, "processes of the deployment's group are still running"
