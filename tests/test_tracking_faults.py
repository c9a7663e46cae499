"""A tracking store that is not there, or goes away mid-run: one line, nothing lost.

MLFLOW_TRACKING_URI naming a server that does not answer is reported within seconds, before
any work, with nothing written. A store deleted while a stage trains stops the stage at the
end of a step with one line, its training state kept in the checkpoint.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_workspace, stage_command, stage_env

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotMlflow(http.server.BaseHTTPRequestHandler):
    """A web server that is not an MLflow server (every path: 404), or a failing one (500)."""
    status = 404

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


class Failing(NotMlflow):
    status = 503


@pytest.fixture()
def web_server():
    servers = []

    def serve(handler) -> str:
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()


def run_with_uri(stage: str, workspace: Path, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(stage_command(stage), cwd=workspace, capture_output=True, text=True, timeout=600,
                            env={**stage_env(), "MLFLOW_TRACKING_URI": uri})
    return result, time.monotonic() - started


def test_servers_that_do_not_answer_are_named_in_one_line_before_any_work(tmp_path, web_server):
    workspace = make_workspace(tmp_path / "ws", git=False)
    cases = {
        f"http://127.0.0.1:{free_port()}": "no MLflow server answers",        # nothing listens
        "http://no-such-host.invalid:5000": "no MLflow server answers",         # a name that does not resolve
        web_server(NotMlflow): "is not an MLflow server",                       # a web server, not MLflow's
        web_server(Failing): "answers with HTTP 503",                           # MLflow's proxy, failing
    }
    for uri, reason in cases.items():
        result, seconds = run_with_uri("synthesize", workspace, uri)
        assert result.returncode == 2, (uri, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: MLFLOW_TRACKING_URI={uri}: {reason}"), lines
        assert seconds < 60, (uri, seconds)  # imports included; the check itself waits at most 5 s
        assert not (workspace / "data" / "synthworld").exists()
        assert not (workspace / "metrics").exists() or not any((workspace / "metrics").iterdir())
        assert not (workspace / "mlflow").exists()


def test_a_store_deleted_mid_training_stops_in_one_line_and_keeps_the_checkpoint(smoke_repo, tmp_path):
    source, _ = smoke_repo
    workspace = make_workspace(tmp_path / "ws", git=False)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train_segmenter"].update(max_epochs=50)
    params["trainer"].update(log_every_n_steps=1)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(source / "data" / "augmented", workspace / "data" / "augmented")
    process = subprocess.Popen(stage_command("train_segmenter"), cwd=workspace, env=stage_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = workspace / "checkpoints" / "train_segmenter"
    deadline = time.time() + 300
    while not list(checkpoints.glob("*/last.ckpt")):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    shutil.rmtree(workspace / "mlflow")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-6000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "MLflow store" in lines[0], err[-3000:]
    assert "training state saved at step" in lines[0]
    (last,) = checkpoints.glob("*/last.ckpt")
    assert str(last.relative_to(workspace)) in lines[0]
    assert not (workspace / "data" / "models" / "segmenter").exists()
