"""A real load balancer (Debian's haproxy) in front of serving replicas on loopback, for tests and benchmarks.

The configuration is what the README's "Scaling out" recommends: health checks on GET /health (503 until a model
is loaded), round robin, and retries that move a request to another replica when its connection fails or the
replica dies before answering (`retry-on` + `option redispatch`), so one replica killed mid-load costs the
clients nothing. Each answer carries the replica's name in `X-Served-By`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from devservers.ports import free_port

HAPROXY = Path(os.environ.get("HAPROXY_BIN") or shutil.which("haproxy") or "/usr/sbin/haproxy")

CONFIG = """\
global
    maxconn 2048

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout queue 30s
    timeout check 5s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout
    option http-buffer-request

frontend router
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server check inter {check_ms} fall 3 rise 2
    http-response set-header X-Served-By %s
{servers}
"""


class HAProxyMissing(RuntimeError):
    """haproxy is not installed."""


class HAProxy:
    """haproxy on a free loopback port in front of `backends` (name -> port)."""

    def __init__(self, root: Path, backends: dict[str, int], check_ms: int = 500) -> None:
        if not HAPROXY.exists():
            raise HAProxyMissing(f"haproxy not found at {HAPROXY}: apt-get install -y haproxy")
        self.root, self.backends, self.check_ms = root, backends, check_ms
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL of the balancer."""
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """The haproxy.cfg text."""
        servers = "\n".join(f"    server {name} 127.0.0.1:{port}" for name, port in self.backends.items())
        return CONFIG.format(port=self.port, check_ms=self.check_ms, servers=servers)

    def start(self, timeout: float = 30) -> HAProxy:
        """Write the configuration, check it, start haproxy in the foreground and wait for its port."""
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "haproxy.cfg"
        cfg.write_text(self.config())
        subprocess.run([str(HAPROXY), "-c", "-q", "-f", str(cfg)], check=True, capture_output=True, timeout=30)
        log = (self.root / "haproxy.log").open("w")
        self.proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {(self.root / 'haproxy.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"haproxy did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop haproxy."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
