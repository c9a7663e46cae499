"""The shared tracking server (MLflow on PostgreSQL, proxied artifacts) as stages meet it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, stage_env

pytestmark = pytest.mark.slow


def test_server_runs_on_postgresql_with_proxied_artifacts(tracking_server):
    assert tracking_server.postgres.uri.startswith("postgresql+psycopg2://")
    assert (tracking_server.postgres.data / "PG_VERSION").is_file()
    command = tracking_server.command()
    assert command[command.index("--backend-store-uri") + 1] == tracking_server.postgres.uri
    assert "--serve-artifacts" in command
    # the database really holds MLflow's schema (its migrations ran against PostgreSQL)
    import sqlalchemy

    engine = sqlalchemy.create_engine(tracking_server.postgres.uri)
    with engine.connect() as connection:
        tables = set(sqlalchemy.inspect(connection).get_table_names())
    engine.dispose()
    assert {"experiments", "runs", "metrics", "params", "tags"} <= tables


def test_the_server_command_refuses_a_port_in_use(tracking_server):
    result = subprocess.run([sys.executable, "-m", "flows.tracking_server", "--port", str(tracking_server.port)],
                            cwd=ROOT, env=stage_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --port {tracking_server.port}: something already listens on "
                                     f"127.0.0.1:{tracking_server.port}")
