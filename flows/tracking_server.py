"""A shared MLflow tracking server on PostgreSQL, the way a lab runs one.

    make mlflow-server                                 # or: python -m flows.tracking_server
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000   # then every stage and flow logs there

PostgreSQL is the backend store (runs, params, metrics, tags); artifacts go through the
server (`--serve-artifacts`) to a local folder, the layout a lab points at object storage
by giving `--artifacts-destination s3://bucket/prefix` instead. Both live under
`mlflow/server/` of the workspace: `postgres/` (the database cluster, created on first
start), `artifacts/`, and the two servers' logs.

PostgreSQL's binaries come from the `pgserver` wheel (a dependency, so nothing is installed
by hand), or from the folder in SUBJECTLAB_PG_BINDIR (e.g. /usr/lib/postgresql/16/bin).
PostgreSQL refuses to run as root: under root the cluster belongs to the unprivileged user
`nobody`, and the folders above it are made traversable for that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from tasks.core.cli import OneLineParser
from tasks.core.errors import USER_ERROR_EXIT_CODE, UserError

PG_BINDIR_ENV = "SUBJECTLAB_PG_BINDIR"
PG_SUPERUSER = "postgres"
DATABASE = "mlflow"
SERVICE_USER = "nobody"   # who runs PostgreSQL when we are root
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pg_bindir() -> Path:
    """Where initdb, pg_ctl and postgres are: SUBJECTLAB_PG_BINDIR, else the pgserver wheel's."""
    named = os.environ.get(PG_BINDIR_ENV)
    if named:
        folder = Path(named)
    else:
        # only the wheel's folder of binaries is used; importing pgserver would start its own machinery
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"no PostgreSQL binaries: install the project (make install) or set {PG_BINDIR_ENV}")
        folder = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (folder / "pg_ctl").is_file():
        raise UserError(f"{PG_BINDIR_ENV}={folder}: holds no pg_ctl")
    return folder


def _service_user() -> Optional[pwd.struct_passwd]:
    """The user PostgreSQL runs as: ourselves, or `nobody` when we are root."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(SERVICE_USER)


def _make_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Let `user` traverse every folder above `path` (search permission only, no listing)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _as_user(user: Optional[pwd.struct_passwd]):
    if user is None:
        return None

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return drop


class PostgresCluster:
    """A PostgreSQL cluster in a folder of the project, listening on 127.0.0.1 only."""

    def __init__(self, data: Path, port: Optional[int] = None):
        self.data = data.resolve()
        self.port = port or free_port()
        self.bindir = pg_bindir()
        self.user = _service_user()

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://{PG_SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.bindir / command[0]), *command[1:]], capture_output=True, text=True,
                                preexec_fn=_as_user(self.user), cwd="/")
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise UserError(f"PostgreSQL {command[0]} failed in {self.data}: {detail[-1] if detail else result.returncode}")
        return result

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            _make_reachable(self.data.parent, self.user)
            for path in [self.data, *self.data.rglob("*")]:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
            _make_reachable(self.bindir, self.user)
        self.data.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            # trust on 127.0.0.1: the cluster listens nowhere else, and the lab's own server
            # would put a password in MLFLOW's backend URI instead
            self._run("initdb", "-D", str(self.data), "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8",
                      "--no-instructions")
        options = f"-h 127.0.0.1 -p {self.port} -k ''"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-o", options, "-w",
                  "-t", str(int(START_TIMEOUT_S)), "start")
        exists = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_SUPERUSER, "-tAc",
                           f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", "postgres")
        if exists.stdout.strip() != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_SUPERUSER, DATABASE)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)


class TrackingServer:
    """`mlflow server` on a PostgreSQL cluster, with proxied artifact storage; a context manager."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: Optional[int] = None,
                 artifacts_destination: Optional[str] = None):
        self.root = root.resolve()
        self.host = host
        self.port = port or free_port()
        self.postgres = PostgresCluster(self.root / "postgres")
        self.artifacts = artifacts_destination or str(self.root / "artifacts")
        self.process: Optional[subprocess.Popen] = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        return [mlflow_cli, "server", "--backend-store-uri", self.postgres.uri, "--serve-artifacts",
                "--artifacts-destination", self.artifacts, "--host", self.host, "--port", str(self.port),
                "--workers", "2"]

    def start(self, log: Optional[Path] = None) -> "TrackingServer":
        self.root.mkdir(parents=True, exist_ok=True)
        if "://" not in self.artifacts:   # a local folder; a bucket needs no mkdir
            Path(self.artifacts).mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        output = open(log or self.root / "mlflow-server.log", "ab")
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        output.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise UserError(f"the MLflow server did not start on {self.uri}; its log: "
                                f"{log or self.root / 'mlflow-server.log'}")
            time.sleep(0.5)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.postgres.stop()

    def __enter__(self) -> "TrackingServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m flows.tracking_server",
                           description="Start MLflow's tracking server on PostgreSQL with proxied artifacts.")
    parser.add_argument("--root", default="mlflow/server", help="folder of the database cluster, artifacts and logs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--artifacts-destination", default=None,
                        help="where proxied artifacts go (default: <root>/artifacts; s3://... for a bucket)")
    args = parser.parse_args(argv)
    server = TrackingServer(Path(args.root), host=args.host, port=args.port,
                            artifacts_destination=args.artifacts_destination)
    with socket.socket() as probe:
        if probe.connect_ex((args.host, args.port)) == 0:
            raise UserError(f"--port {args.port}: something already listens on {args.host}:{args.port}")
    server.start()
    print(f"MLflow tracking server on PostgreSQL: {server.uri}  (export MLFLOW_TRACKING_URI={server.uri}; "
          f"Ctrl-C stops both servers)", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    if server.process.returncode not in (0, -signal.SIGTERM, None) and not stop:
        print(f"error: the MLflow server exited ({server.process.returncode}); see {server.root / 'mlflow-server.log'}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
