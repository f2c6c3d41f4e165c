"""A PostgreSQL server on 127.0.0.1 in a folder of its own, as a child process: the shared deployment's database
(call cache, Dagster instance) for the tests and the benchmarks, or by hand:

    .venv/bin/python -m resources.postgres_server

starts one on a free port, prints the URLs of a ``dsc`` and a ``dagster`` database on it, and stops it (deleting its
folder) on Ctrl-C or SIGTERM. It uses Debian's server binaries (``apt-get install -y postgresql``; ``make postgres`` does it).
PostgreSQL refuses to run as root, so as root the cluster belongs to Debian's ``postgres`` user (``runuser``);
anyone else runs it as themselves. Authentication is ``trust`` for the one superuser ``dsc``, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "dsc"
INSTALL_HINT = "apt-get install -y postgresql (as root; `make postgres` does it)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresError(RuntimeError):
    """The server could not be set up or started: the command and its output's end are in the message."""


def server_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (the newest of Debian's versions), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name or 0))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _owner() -> str | None:
    """The user the server runs as: Debian's ``postgres`` when this process is root, else this process's user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError("running as root needs Debian's 'postgres' user; " + INSTALL_HINT) from None
    return "postgres"


class PostgresServer:
    """One cluster in a temporary folder (owned by the server's user), on a port chosen once: a server stopped and
    started again listens at the same URL, as a restarted database would."""

    def __init__(self, port: int | None = None):
        self.bin = server_binaries()
        if self.bin is None:
            raise PostgresError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed; " + INSTALL_HINT)
        self.owner = _owner()
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="dsc-pg-"))
        self.data = self.folder / "data"
        if self.owner:
            entry = pwd.getpwnam(self.owner)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
            "--no-sync",
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> "PostgresServer":
        """Start the server and wait until it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session at once (what a restart does to clients), ``immediate`` is a
        crash (no checkpoint; the next start recovers from the write-ahead log)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        status = subprocess.run(self._command("pg_ctl", "-D", str(self.data), "status"), capture_output=True)
        return status.returncode == 0

    def create_database(self, name: str) -> str:
        """A new empty database ``name`` on this server; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def shared_databases(self, prefix: str = "") -> dict[str, str]:
        """The shared deployment's three databases (the call cache, the Dagster instance, the warehouse), created
        empty; the variables that point dsc at them. ``prefix`` keeps one user's names apart from another's on one
        server."""
        return {
            "DSC_CACHE_URL": self.create_database(f"{prefix}dsc"),
            "DSC_INSTANCE_URL": self.create_database(f"{prefix}dagster"),
            "DSC_WAREHOUSE_URL": self.create_database(f"{prefix}tables"),
        }

    def close(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self) -> str:
        log = self.folder / "server.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log yet)"

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        if not (self.bin / tool).exists():  # createdb and psql are client tools: on PATH when not beside initdb
            command[0] = shutil.which(tool) or tool
        return ["runuser", "-u", self.owner, "--", *command] if self.owner else command

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(self._command(tool, *args), capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-1500:]
            raise PostgresError(f"{tool} {' '.join(args)} failed ({done.returncode}): {output}\n{self.log_tail()}")

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    args = parser.parse_args()

    def stop(signum, frame):  # Ctrl-C, and a `kill` (a background job of a script ignores SIGINT)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with PostgresServer(args.port) as server:
        print("\n".join(f"{name}={url}" for name, url in server.shared_databases().items()), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
