"""A private PostgreSQL server in a temp dir, for tests and benchmarks that stop and start their database.

initdb refuses root, so as root the server runs as the `postgres` user (STACK.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from devservers.ports import free_port

PG_BIN = Path(
    os.environ.get("PG_BIN")
    or max((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), default="/usr/lib/postgresql/15/bin")
)


class PostgresServer:
    """A private PostgreSQL server in a temp dir that a test may stop and start (initdb runs as `postgres`)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.datadir, self.sockdir = root / "pgdata", root / "sock"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresServer:
        """initdb the data dir."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockdir, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres")
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-o", opts, "-w", "-l",
                  str(self.root / "log"), "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
